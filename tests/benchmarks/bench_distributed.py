"""Data-parallel scaling on this machine: images/s of tiny-vit training steps with the same per-process batch,
and the share of each step spent inside collectives (minclip.distributed.comm_seconds), one BLAS thread each.

    python tests/benchmarks/bench_distributed.py [B] [STEPS]
    mpiexec -n 2 python -m mpi4py tests/benchmarks/bench_distributed.py [B] [STEPS]
"""
import sys
import time

import numpy as np

from minclip import distributed as dist
from minclip.model import create_model
from minclip.optim import AdamW, param_groups_for_clip
from minclip.train import train_step

B, steps = int(sys.argv[1]) if len(sys.argv) > 1 else 32, int(sys.argv[2]) if len(sys.argv) > 2 else 8
dist.set_blas_threads(1)
model = create_model("tiny-vit")
dist.broadcast_model(model)
opt = AdamW(param_groups_for_clip(model, 0.1), lr=1e-4)
rng = np.random.default_rng(dist.rank())
n_px = model.visual.input_resolution
images = rng.standard_normal((B, 3, n_px, n_px)).astype(np.float32)
tokens = rng.integers(1, model.vocab_size - 1, (B, 16))
tokens[:, -1] = model.vocab_size - 1
model.train()
train_step(model, opt, images, tokens)  # warm-up
dist.barrier()
dist.comm_seconds = 0.0
t0 = time.perf_counter()
for _ in range(steps):
    train_step(model, opt, images, tokens)
dist.barrier()
wall = time.perf_counter() - t0
if dist.is_main():
    K = dist.world_size()
    print(f"K={K} per-process batch {B}: {K * B * steps / wall:.1f} images/s, {wall / steps * 1000:.0f} ms/step, "
          f"collectives {dist.comm_seconds / wall:.1%} of the step (rank 0, waiting included)")
