"""Benchmark one training step: `python tests/benchmarks/bench_step.py`.

For tiny-vit and tiny-rn at batch 64 it times forward + backward + AdamW step,
and reports ms/step, images/s, the FLOPs of a step (counted from the matmuls and
convolutions the step actually runs) and the model-FLOPs utilisation (MFU)
against this machine's measured NumPy matmul peak. When torch is importable the
same model, with the same weights, runs in PyTorch in the same process and the
ratio minclip / torch is printed (the target on CPU is <= 1.5x).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from minclip import backend
from minclip import functional as F
from minclip.autograd import MatMul

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


def _batch(model, batch_size, text_len, seed=0):
    rng = np.random.default_rng(seed)
    n_px = model.visual.input_resolution
    images = rng.standard_normal((batch_size, 3, n_px, n_px)).astype(np.float32)
    tokens = rng.integers(1, model.vocab_size - 1, (batch_size, text_len))
    tokens[:, -1] = model.vocab_size - 1  # the EOT (largest id) ends each caption
    return images, tokens


def bench_minclip(name, batch_size=64, text_len=16, steps=10, warmup=2):
    from minclip.model import create_model
    from minclip.optim import AdamW, param_groups_for_clip
    from minclip.train import train_step
    backend.manual_seed(0)
    model = create_model(name).train()
    opt = AdamW(param_groups_for_clip(model, 0.1), lr=1e-4)
    images, tokens = _batch(model, batch_size, text_len)
    images = backend.asarray(images)
    with FlopCounter() as fc:
        train_step(model, opt, images, tokens)
    times = []
    for i in range(warmup + steps):
        _sync()
        t = time.perf_counter()
        train_step(model, opt, images, tokens)
        _sync()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return model, statistics.median(times), 3 * fc.flops


def bench_torch(model, batch_size=64, text_len=16, steps=10, warmup=2):
    """The same model and weights in PyTorch (float32, CPU); median seconds per step."""
    import torch
    from torch_reference import clip_from_minclip
    tmodel = clip_from_minclip(model, context_length=text_len).train()
    opt = torch.optim.AdamW(tmodel.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    images, tokens = _batch(model, batch_size, text_len)
    images, tokens = torch.from_numpy(images), torch.from_numpy(tokens)
    labels = torch.arange(batch_size)
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        logits_per_image, logits_per_text = tmodel(images, tokens)
        loss = (torch.nn.functional.cross_entropy(logits_per_image, labels)
                + torch.nn.functional.cross_entropy(logits_per_text, labels)) / 2
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tmodel.parameters(), 1.0)
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="tiny-vit,tiny-rn")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--text-len", type=int, default=16, help="caption tokens (the training default)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    args = p.parse_args(argv)
    backend.use(args.backend)
    peak = matmul_peak()
    print(f"backend {backend.current()}, matmul peak {peak:.1f} GFLOP/s (float32, 1024^3)")
    try:
        import torch
        torch_ok = not args.no_torch and args.backend == "numpy"
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads" if torch_ok else "")
    except ImportError:
        torch_ok = False
        print("torch not installed: no side-by-side comparison")
    rows = []
    for name in args.models.split(","):
        model, sec, flops = bench_minclip(name, args.batch_size, args.text_len, args.steps)
        row = {"model": name, "ms/step": 1e3 * sec, "img/s": args.batch_size / sec,
               "GFLOP/step": flops / 1e9, "MFU": flops / sec / 1e9 / peak}
        if torch_ok:
            tsec = bench_torch(model, args.batch_size, args.text_len, args.steps)
            row.update({"torch ms/step": 1e3 * tsec, "ratio": sec / tsec})
        rows.append(row)
    cols = list(rows[0])
    print(" | ".join(f"{c:>13s}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>13.3g}" if isinstance(r[c], float) else f"{r[c]:>13s}" for c in cols))
    return rows


if __name__ == "__main__":
    main()
