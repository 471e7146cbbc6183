"""A 2-rank training run in which rank 1 raises at step 4 (mid epoch 2): test_distributed.py's fault test.

    mpiexec -n 2 python -m mpi4py tests/mpi_scripts/fail_rank.py LOGS NAME
"""
import sys

from minclip import distributed as dist
from minclip.train import TrainConfig, train


def fail(step, loss, model):
    if step == 4 and dist.rank() == 1:
        raise RuntimeError("rank 1 fails on purpose at step 4")


train(TrainConfig(train_size=48, eval_size=16, epochs=2, batch_size=8, warmup=2, logs=sys.argv[1], name=sys.argv[2],
                  progress=False, workers=1, log_every=1, lr=5e-4), on_step=fail)  # lr as test_distributed.TRAIN
