"""Benchmark full-size inference: `python tests/benchmarks/bench_inference.py [--model ViT-B-32]`.

ViT-B/32 image encoding under no_grad, as `minclip.load` gives it, against PyTorch running OpenAI's
model (tests/torch_reference.py) with the same weights on the same batch, in the same run. The
weights are random (seeded), written once as an fp16 `torch.save` file like OpenAI's release (an
`.npz` when torch is absent); each measurement runs in its own subprocess so that its peak resident
memory (VmHWM: weights + activations + interpreter) is its own. Prints images/s at batch 32
(best of --repeats after one warm-up batch), the peak memory while loading and while encoding
at batch 32 and 64, and the largest
difference between the two libraries' features.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def images(batch, resolution):
    return np.random.default_rng(0).standard_normal((batch, 3, resolution, resolution)).astype(np.float32)


def run_minclip(path, batch, repeats, out):
    import minclip
    from minclip import no_grad, to_numpy
    model, _ = minclip.load(path)
    load_peak = reset_peak()
    x = images(batch, model.visual.input_resolution)
    times = []
    for _ in range(repeats + 1):  # the first batch warms up BLAS and the allocator
        t = time.perf_counter()
        with no_grad():
            features = model.encode_image(x)
        times.append(time.perf_counter() - t)
    np.save(out, to_numpy(features.data))
    return (times[1:] if repeats else times), load_peak


def run_torch(path, batch, repeats, out, config):
    import torch
    sys.path.insert(0, str(TESTS))
    from torch_reference import TorchCLIP
    sd = torch.load(path) if path.endswith(".pt") else {k: torch.from_numpy(v) for k, v in np.load(path).items()}
    model = TorchCLIP(**config)
    model.load_state_dict(sd)
    model = model.float().eval()
    del sd
    load_peak = reset_peak()
    x = torch.from_numpy(images(batch, config["image_resolution"]))
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        with torch.no_grad():
            features = model.encode_image(x)
        times.append(time.perf_counter() - t)
    np.save(out, features.numpy())
    return (times[1:] if repeats else times), load_peak


def worker(args):
    from minclip.model import load_config
    out = os.path.join(args.tmp, f"{args.worker}-{args.batch}.npy")
    if args.worker == "minclip":
        times, load_peak = run_minclip(args.weights, args.batch, args.repeats, out)
    else:
        times, load_peak = run_torch(args.weights, args.batch, args.repeats, out, load_config(args.model))
    print(json.dumps({"times": times, "load_peak_mb": load_peak, "peak_mb": peak_rss_mb(), "features": out}))


def reset_peak():
    """The peak so far (MB), then reset the peak to the current RSS (writing 5 to /proc/self/clear_refs),
    so that the next peak_rss_mb() is the peak of what follows: inference alone, weights included."""
    peak = peak_rss_mb()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux: the later peak includes loading
    return peak


def peak_rss_mb():
    """This process's peak resident memory in MB: VmHWM of /proc/self/status on Linux, which is reset
    by exec; ru_maxrss elsewhere (on Linux it keeps the parent's high-water mark across fork + exec)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / (1024 if sys.platform == "darwin" else 1)


def measure(args, which, batch, repeats):
    cmd = [sys.executable, __file__, "--worker", which, "--batch", str(batch), "--repeats", str(repeats),
           "--weights", args.weights, "--tmp", args.tmp, "--model", args.model]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(f"{which} batch {batch} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=["minclip", "torch"])
    parser.add_argument("--weights")
    parser.add_argument("--tmp")
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    sys.path.insert(0, str(ROOT))
    from minclip import backend
    from minclip.model import create_model
    try:
        import torch
    except ImportError:
        torch = None
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        backend.manual_seed(0)
        with backend.default_dtype(np.float32):
            sd = create_model(args.model).state_dict()
        half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in sd.items()}
        del sd
        if torch is not None:
            args.weights = os.path.join(tmp, f"{args.model}.pt")
            torch.save({k: torch.from_numpy(v) for k, v in half.items()}, args.weights)
        else:
            args.weights = os.path.join(tmp, f"{args.model}.npz")
            np.savez(args.weights, **half)
        print(f"{args.model}, random fp16 weights ({os.path.getsize(args.weights) / 2**20:.0f} MiB file), "
              f"image encoding under no_grad, float32 on the CPU, {os.cpu_count()} cores")
        rows = [("minclip", measure(args, "minclip", args.batch, args.repeats))]
        if torch is not None:
            rows.append((f"torch {torch.__version__}", measure(args, "torch", args.batch, args.repeats)))
        big = measure(args, "minclip", 2 * args.batch, 0)
        print("peak RSS (MB): while loading the file, and while encoding (model weights included)")
        print(f"{'':18s} {'batch':>5s} {'images/s':>9s} {'s/batch (best; runs)':>28s} {'load':>6s} {'encode':>7s}")
        for name, r in rows + [("minclip", big)]:
            n = args.batch if r is not big else 2 * args.batch
            best = min(r["times"])
            runs = ", ".join(f"{t:.2f}" for t in r["times"])
            speed = f"{n / best:9.1f} {best:6.2f} ({runs:>19s})" if r is not big else f"{'':9s} {'':28s}"
            print(f"{name:18s} {n:5d} {speed} {r['load_peak_mb']:6.0f} {r['peak_mb']:7.0f}")
        if torch is not None:
            ours, theirs = (np.load(r["features"]) for _, r in rows)
            ratio = min(rows[0][1]["times"]) / min(rows[1][1]["times"])
            print(f"time minclip / torch: {ratio:.2f}; max |feature difference|: "
                  f"{np.abs(ours - theirs).max():.2e} (features ~{np.abs(theirs).mean():.2f})")


if __name__ == "__main__":
    main()
