"""Benchmark one training step: `python tests/benchmarks/bench_step.py [--models tiny-vit,configs/vit-128.json]`.

For each model (a config name from minclip/configs, or a JSON file of CLIP's constructor arguments such as
tests/benchmarks/configs/vit-128.json and rn-32.json, the configurations of issue 23; tiny-vit and tiny-rn by
default) and batch size (64 unless `--batch-size 32,64` says otherwise) it times
forward + backward + AdamW step, and reports ms/step, images/s, the FLOPs of a step (counted
from the matmuls and convolutions the step actually runs) and the model-FLOPs utilisation (MFU)
against this machine's measured NumPy matmul peak. When torch is importable the same model,
with the same weights and batch, runs in PyTorch in the same process, in blocks of steps
alternating with minclip's, and the ratio minclip / torch is printed (targets on CPU:
tiny-rn <= 1.5x, tiny-vit <= 1.25x). With `--backend cupy` minclip runs on the GPU and PyTorch on CUDA,
and the peak device memory of each is reported; `--json PATH` writes the table (.ci/gpu-check uses it).
`--breakdown` adds a table of where minclip's step goes: forward and backward time per Function.
"""
import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from minclip import backend, parallel
from minclip import functional as F
from minclip.autograd import Function, MatMul

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the PyTorch reference model


def _sync():
    if backend.current() == "cupy":
        backend.xp.cuda.Stream.null.synchronize()


def matmul_peak(n=1024, repeats=10):
    """Measured float32 matmul rate of this backend in GFLOP/s (best of `repeats`)."""
    a = backend.randn(n, n, rng=0)
    b = backend.randn(n, n, rng=1)
    a @ b
    _sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        _sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


class FlopCounter:
    """Counts multiply-add FLOPs (2 per MAC) of the matmul-like Functions run inside `with`.

    Forward FLOPs are counted; a backward pass costs about twice its forward (two
    matmuls per matmul), so a training step is ~3x the counted forward FLOPs.
    """
    def __enter__(self):
        self.flops = 0
        self._orig = {}
        counter = self

        def wrap(cls, count):
            orig = cls.forward
            self._orig[cls] = orig

            def forward(fn, *xs):
                y = orig(fn, *xs)
                counter.flops += count(fn, xs, y)
                return y
            cls.forward = forward

        wrap(MatMul, lambda f, xs, y: 2 * y.size * xs[0].shape[-1])
        wrap(F.Linear, lambda f, xs, y: 2 * y.size * xs[0].shape[-1])
        wrap(F.Conv2d, lambda f, xs, y: 2 * y.size * int(np.prod(xs[1].shape[1:])))
        wrap(F.ScaledDotProductAttention, lambda f, xs, y: 2 * 2 * y.size * xs[1].shape[-2])
        return self

    def __exit__(self, *exc):
        for cls, orig in self._orig.items():
            cls.forward = orig


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


class OpTimer:
    """Wall time of forward and of backward per Function class, for the steps run inside `with`.

    Each class's own forward/backward is wrapped (a subclass that reuses its parent's, like Mean,
    is timed under its own name). What no Function runs (autograd bookkeeping, the optimizer)
    is the step time minus the total."""
    def __enter__(self):
        self.seconds = defaultdict(float)      # (class name, "forward" | "backward") -> seconds
        self.calls = defaultdict(int)
        self._orig = []
        for cls in set(_subclasses(Function)):
            for method in ("forward", "backward"):
                if method in vars(cls):
                    self._wrap(cls, method)
        return self

    def _wrap(self, cls, method):
        orig = vars(cls)[method]
        self._orig.append((cls, method, orig))
        key, timer = (cls.__name__, method), self

        def timed(fn, *args):
            if type(fn) is not cls:         # a subclass calling super(): counted under the subclass
                return orig(fn, *args)
            _sync()
            t = time.perf_counter()
            out = orig(fn, *args)
            _sync()
            timer.seconds[key] += time.perf_counter() - t
            timer.calls[key] += 1
            return out
        setattr(cls, method, timed)

    def __exit__(self, *exc):
        for cls, method, orig in self._orig:
            setattr(cls, method, orig)

    def table(self, step_seconds, steps, top=14):
        """Lines of a per-op table: ms per step in forward and backward, and the share of a step
        (`step_seconds`: the mean wall time of the timed steps themselves)."""
        names = {name for name, _ in self.seconds}
        per_op = {n: (self.seconds[n, "forward"] / steps, self.seconds[n, "backward"] / steps) for n in names}
        order = sorted(per_op, key=lambda n: -sum(per_op[n]))
        lines = [f"{'op':>26s} | {'fwd ms':>7s} | {'bwd ms':>7s} | {'share':>6s}"]
        for n in order[:top]:
            f, b = per_op[n]
            lines.append(f"{n:>26s} | {1e3 * f:7.1f} | {1e3 * b:7.1f} | {(f + b) / step_seconds:6.1%}")
        rest = sum(sum(per_op[n]) for n in order[top:])
        other = step_seconds - sum(sum(v) for v in per_op.values())
        lines.append(f"{'other ops':>26s} | {'':>7s} | {'':>7s} | {rest / step_seconds:6.1%}")
        lines.append(f"{'outside ops (autograd, AdamW)':>26s} | {'':>7s} | {'':>7s} | {other / step_seconds:6.1%}")
        return lines


def _batch(model, batch_size, text_len, seed=0):
    rng = np.random.default_rng(seed)
    n_px = model.visual.input_resolution
    images = rng.standard_normal((batch_size, 3, n_px, n_px)).astype(np.float32)
    tokens = rng.integers(1, model.vocab_size - 1, (batch_size, text_len))
    tokens[:, -1] = model.vocab_size - 1  # the EOT (largest id) ends each caption
    return images, tokens


def make_model(name):
    """A CLIP from a config name (minclip/configs) or a JSON file of its constructor arguments."""
    from minclip.model import CLIP, create_model
    if name.endswith(".json"):
        path = Path(name) if Path(name).exists() else Path(__file__).parent / name
        return CLIP(**json.loads(path.read_text()))
    return create_model(name)


def minclip_step(name, batch_size=64, text_len=16):
    """(model, step function, FLOPs of one step): forward + backward + AdamW on a fixed batch."""
    from minclip.optim import AdamW, param_groups_for_clip
    from minclip.train import train_step
    backend.keep_freed_memory()  # as minclip.train.train does
    backend.manual_seed(0)
    model = make_model(name).train()
    opt = AdamW(param_groups_for_clip(model, 0.1), lr=1e-4)
    images, tokens = _batch(model, batch_size, text_len)
    images = backend.asarray(images)

    def step():
        train_step(model, opt, images, tokens)
        _sync()
    with FlopCounter() as fc:
        step()
    return model, step, 3 * fc.flops


def torch_step(model, batch_size=64, text_len=16, device="cpu"):
    """The same model, weights and batch in PyTorch (float32, on `device`): its step function."""
    import torch
    from torch_reference import clip_from_minclip
    tmodel = clip_from_minclip(model, context_length=text_len).train().to(device)
    opt = torch.optim.AdamW(tmodel.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    images, tokens = _batch(model, batch_size, text_len)
    images, tokens = torch.from_numpy(images).to(device), torch.from_numpy(tokens).to(device)
    labels = torch.arange(batch_size, device=device)

    def step():
        logits_per_image, logits_per_text = tmodel(images, tokens)
        loss = (torch.nn.functional.cross_entropy(logits_per_image, labels)
                + torch.nn.functional.cross_entropy(logits_per_text, labels)) / 2
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tmodel.parameters(), 1.0)
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
    return step


def peak_device_memory():
    """Peak bytes each framework held on the GPU so far: {"minclip": CuPy's pool, "torch": its allocator}."""
    out = {}
    if backend.current() == "cupy":
        out["minclip"] = backend.xp.get_default_memory_pool().total_bytes()
        try:
            import torch
            out["torch"] = torch.cuda.max_memory_allocated()
        except ImportError:
            pass
    return out


def time_interleaved(steps_by_name, steps=10, warmup=2, pause=0.3):
    """Seconds per step (median) of each step function, the frameworks taking turns step by step.

    This machine's speed drifts within minutes, so minclip and torch alternate (a step of one, a step of
    the other, again ...) and live through the same drift. A `pause` before every timed step lets the
    other framework's idle threads stop spinning (OpenBLAS and OpenMP workers busy-wait for ~0.2 s after
    their last call and would take a core from the next step)."""
    times = {name: [] for name in steps_by_name}
    for name, step in steps_by_name.items():
        for _ in range(warmup):
            step()
    for _ in range(steps):
        for name, step in steps_by_name.items():
            time.sleep(pause)
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def op_breakdown(step, steps):
    """An OpTimer over `steps` extra steps (its synchronisation stays out of the step times)."""
    with OpTimer() as timer:
        t = time.perf_counter()
        for _ in range(steps):
            step()
        timer.step_seconds = (time.perf_counter() - t) / steps
    return timer


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="tiny-vit,tiny-rn",
                   help="config names or JSON files (relative to tests/benchmarks/ or the working folder)")
    p.add_argument("--batch-size", default="64", help="one size or several, comma-separated: 32,64,128")
    p.add_argument("--text-len", type=int, default=16, help="caption tokens (the training default)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--json", help="also write the table (and the peak device memory) to this JSON file")
    p.add_argument("--breakdown", type=int, default=3, metavar="STEPS",
                   help="time each Function's forward/backward over this many extra steps (0: no table)")
    args = p.parse_args(argv)
    backend.use(args.backend)
    peak = matmul_peak()
    print(f"backend {backend.current()}, matmul peak {peak:.1f} GFLOP/s (float32, 1024^3), "
          f"{parallel.num_threads()} thread(s) for minclip's ops (MINCLIP_NUM_THREADS)")
    try:
        import torch
        device = "cuda" if args.backend == "cupy" else "cpu"
        torch_ok = not args.no_torch and (device == "cpu" or torch.cuda.is_available())
        print(f"torch {torch.__version__} on {device}, {torch.get_num_threads()} threads" if torch_ok else "")
    except ImportError:
        torch_ok = False
        print("torch not installed: no side-by-side comparison")
    rows = []
    for name in args.models.split(","):
        for bs in [int(b) for b in args.batch_size.split(",")]:
            model, step, flops = minclip_step(name, bs, args.text_len)
            steps_by_name = {"minclip": step}
            if torch_ok:
                steps_by_name["torch"] = torch_step(model, bs, args.text_len, device)
            sec = time_interleaved(steps_by_name, args.steps)
            row = {"model": Path(name).stem, "batch": bs, "ms/step": 1e3 * sec["minclip"], "img/s": bs / sec["minclip"],
                   "GFLOP/step": flops / 1e9, "MFU": flops / sec["minclip"] / 1e9 / peak}
            if torch_ok:
                row.update({"torch ms/step": 1e3 * sec["torch"], "ratio": sec["minclip"] / sec["torch"]})
            rows.append(row)
            if args.breakdown:
                timer = op_breakdown(step, args.breakdown)
                print(f"\n{name}, batch {bs}: where a minclip step goes (mean of {args.breakdown} more steps, "
                      f"{1e3 * timer.step_seconds:.0f} ms each)")
                print("\n".join(timer.table(timer.step_seconds, args.breakdown)))
    print()
    cols = list(rows[0])
    print(" | ".join(f"{c:>13s}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>13.3g}" if isinstance(r[c], float) else f"{r[c]!s:>13s}" for c in cols))
    memory = peak_device_memory()
    if memory:
        print("peak device memory: " + ", ".join(f"{k} {v / 2 ** 20:.0f} MiB" for k, v in memory.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": backend.current(), "matmul_gflops": peak, "rows": rows,
                       "peak_device_memory_bytes": memory}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
