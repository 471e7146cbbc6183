"""Data-parallel training over MPI (minclip.distributed, docs/distributed.md).

The MPI tests launch `mpiexec -n 2` on this machine and skip, with the reason, when mpi4py or
mpiexec is missing (pip install -e ".[mpi]"). The others run on one process without MPI.
"""
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from minclip import backend
from minclip import distributed as dist
from minclip.checkpoint import read_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPTS = os.path.join(HERE, "mpi_scripts")


def _mpiexec():
    found = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    return found


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="needs mpi4py and mpiexec: pip install -e '.[mpi]'")


def run(args, n=None, timeout=240, env=None):
    """Run `python args...` (under `mpiexec -n n python -m mpi4py` when n is given) -> CompletedProcess."""
    cmd = [sys.executable] + args
    if n is not None:
        cmd = [MPIEXEC, "-n", str(n), sys.executable, "-m", "mpi4py"] + args
    e = dict(os.environ, PYTHONPATH=ROOT, MINCLIP_BACKEND="numpy", **(env or {}))
    for v in dist._LAUNCH_VARS:  # a test run inside mpiexec must not make the reference runs look launched
        e.pop(v, None)
    return subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)


def check(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


# ----------------------------------------------------------------------------- (a) the Python API, 2 ranks
@needs_mpi
@pytest.mark.parametrize("model", ["tiny-vit", "tiny-rn"])
def test_two_ranks_match_one_process_with_the_doubled_batch(tmp_path, model):
    """2 ranks x 4 pairs vs 1 process x 8 pairs: loss, every gradient and every updated weight agree
    to 1e-5 (float64). tiny-rn keeps BatchNorm statistics local per rank as PyTorch's DDP does, so
    the reference encodes the images as two forwards of 4 (see mpi_scripts/one_step.py), and rank r's
    running statistics must equal those of a model that saw only its 4 images (and differ between ranks).
    """
    out = str(tmp_path / "r")
    script = os.path.join(SCRIPTS, "one_step.py")
    check(run([script, model, "8", out], n=2))
    check(run([script, model, "8", out, "--reference", "2"]))
    ranks = [dict(np.load(f"{out}.{r}.npz")) for r in (0, 1)]
    ref = dict(np.load(f"{out}.ref.npz"))
    compared = 0
    for got in ranks:
        np.testing.assert_allclose(got["loss"], ref["loss"], rtol=1e-5)
        for k, v in ref.items():
            if k.startswith(("grad/", "after/")) and "running" not in k and "num_batches" not in k:
                # atol: a few gradients are exactly zero in theory (attention key biases) and rounding noise here
                np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-12, err_msg=k)
                compared += 1
    assert compared > 50
    bn = [k for k in ref if k.startswith("local0/")]
    assert bool(bn) == (model == "tiny-rn")
    for k in bn:
        key = "after/" + k.split("/", 1)[1]
        for r in (0, 1):
            np.testing.assert_allclose(ranks[r][key], ref[f"local{r}/" + k.split("/", 1)[1]], rtol=1e-10, err_msg=key)
    if bn:
        assert any(not np.allclose(ranks[0]["after/" + k[7:]], ranks[1]["after/" + k[7:]]) for k in bn), \
            "BatchNorm running statistics should differ between ranks (local per rank)"


# ----------------------------------------------------------------------------- (b) the CLI, 2 ranks
# Two runs that should end with the same weights, in float32. Adam's steps are about lr in size whatever the
# gradient, so an element whose gradient sums to nearly zero (terms that cancel, added in another order over
# 2 ranks) can move by a visible share of lr: at --lr 5e-4, on one machine, 1 of 131,072 token-embedding
# entries differed by 1.7e-6. atol 1e-5 is lr / 50; one rank's gradient alone moves weights by up to lr a step.
SAME_WEIGHTS = dict(rtol=1e-5, atol=1e-5)
TRAIN = ["-m", "minclip.cli", "train", "--train-size", "48", "--eval-size", "16", "--epochs", "2", "--warmup", "2",
         "--workers", "1", "--no-progress", "--log-every", "1", "--lr", "5e-4"]


@needs_mpi
def test_mpiexec_minclip_train_matches_one_process_with_the_doubled_batch(tmp_path):
    """`mpiexec -n 2 minclip train --batch-size 8` and `minclip train --batch-size 16` write checkpoints
    with the same weights (float32, SAME_WEIGHTS, over 6 AdamW steps with the same global batches)."""
    logs = ["--logs", str(tmp_path)]
    two = run(TRAIN + logs + ["--name", "two", "--batch-size", "8"], n=2)
    check(two)
    assert two.stdout.count("trained 6 steps") == 1  # rank 0 alone reports
    check(run(TRAIN + logs + ["--name", "one", "--batch-size", "16"]))
    a, sa = read_checkpoint(str(tmp_path / "two" / "checkpoints" / "latest.npz"))
    b, sb = read_checkpoint(str(tmp_path / "one" / "checkpoints" / "latest.npz"))
    assert sa["step"] == sb["step"] == 6
    for k in b:
        np.testing.assert_allclose(a[k], b[k], **SAME_WEIGHTS, err_msg=k)


# ----------------------------------------------------------------------------- (c) a rank fails mid-epoch
@needs_mpi
def test_a_failing_rank_aborts_the_job_and_the_checkpoint_resumes_with_another_K(tmp_path):
    """Rank 1 raises at step 4 (mid epoch 2 of 3 steps): the whole job exits non-zero well within the
    timeout, the end-of-epoch-1 checkpoint is intact, and --resume from it finishes on 2 ranks and on
    1 process (K changed: same sample offset), both ending with the uninterrupted run's weights."""
    script = os.path.join(SCRIPTS, "fail_rank.py")
    t0 = time.time()
    bad = run([script, str(tmp_path), "cut"], n=2, env={"MINCLIP_DIST_TIMEOUT": "60"})
    assert bad.returncode != 0 and time.time() - t0 < 60, bad.stderr[-2000:]
    assert "rank 1 fails on purpose" in bad.stderr
    ckpt = tmp_path / "cut" / "checkpoints" / "latest.npz"
    state = read_checkpoint(str(ckpt))[1]
    assert state["step"] == 3 and state["epoch"] == 1 and state["epoch_samples"] == 0
    logs = ["--logs", str(tmp_path)]
    check(run(TRAIN + logs + ["--name", "full", "--batch-size", "16"]))
    full = read_checkpoint(str(tmp_path / "full" / "checkpoints" / "latest.npz"))[0]
    for k_ranks, bs in ((2, "8"), (None, "16")):
        shutil.copy(ckpt, tmp_path / f"resume{k_ranks}.npz")
        copy = str(tmp_path / f"resume{k_ranks}.npz")
        res = run(TRAIN + logs + ["--name", "cut", "--batch-size", bs, "--resume", copy], n=k_ranks)
        check(res)
        got, st = read_checkpoint(str(ckpt))
        assert st["step"] == 6
        for k in full:
            np.testing.assert_allclose(got[k], full[k], **SAME_WEIGHTS, err_msg=k)


# ----------------------------------------------------------------------------- (d) one process, no MPI
def test_one_process_runs_unchanged_without_importing_mpi4py():
    code = ("import sys; from minclip import distributed as d; from minclip.train import train; "
            "assert (d.rank(), d.world_size(), d.is_main()) == (0, 1, True); "
            "assert 'mpi4py' not in sys.modules; print('ok')")
    check(run(["-c", code]))


def test_sharding_covers_the_single_process_batches_in_order():
    from minclip.data import DataLoader

    class Items:
        def __len__(self):
            return 50

        def __getitem__(self, i):
            return np.zeros((3, 2, 2), np.float32), i

    for epoch in (0, 3):
        one = DataLoader(Items(), batch_size=12, shuffle=True, seed=5, drop_last=True)
        single = [one.order(epoch)[k * 12:(k + 1) * 12] for k in range(len(one))]
        for K in (1, 2, 3):
            shards = [dist.ShardedLoader(DataLoader(Items(), batch_size=12 // K, shuffle=True, seed=5),
                                         rank=r, world_size=K) for r in range(K)]
            assert all(len(s) == len(one) == 4 for s in shards)
            for k, batch in enumerate(single):  # global batch k = the K rank batches side by side
                np.testing.assert_array_equal(np.concatenate([s.indices(epoch)[k] for s in shards]), batch)
            labels = [b[1].tolist() for b in shards[K - 1].iter_epoch(epoch, start_batch=1)]
            assert labels == [s.tolist() for s in shards[K - 1].indices(epoch, 1)]
    with pytest.raises(ValueError, match="start_batch"):
        shards[0].iter_epoch(0, start_batch=9)
    plain = DataLoader(Items(), batch_size=4)
    assert dist.shard(plain) is plain  # one process: the loader itself


def test_gather_and_global_loss_are_the_identity_on_one_process():
    from _helpers import tensor

    from minclip.gradcheck import gradcheck
    from minclip.loss import clip_loss, clip_loss_global
    x = tensor((4, 3), seed=1)
    assert dist.all_gather(x) is x
    img, txt = tensor((5, 3), seed=2), tensor((5, 3), seed=3)
    assert float(backend.to_numpy(clip_loss_global(img, txt, 2.0).data)) == \
        float(backend.to_numpy(clip_loss(img, txt, 2.0).data))
    gradcheck(lambda a, b: clip_loss_global(a, b, 2.0), [img, txt])


def test_gather_backward_is_reduce_scatter(monkeypatch):
    """AllGather with 2 simulated ranks: forward stacks, backward gives this rank its block summed over ranks."""
    from _helpers import tensor

    import minclip.distributed as d
    other = np.arange(6.0).reshape(2, 3)
    monkeypatch.setattr(d, "world_size", lambda: 2)
    monkeypatch.setattr(d, "allgather",
                        lambda a, what="": backend.asarray(np.concatenate([backend.to_numpy(a), other])))
    monkeypatch.setattr(d, "reduce_scatter_sum", lambda g, what="": g[:2] + g[:2])  # the other rank sends the same
    x = tensor((2, 3))
    y = d.all_gather(x)
    assert tuple(y.shape) == (4, 3)
    (y * y).sum().backward()
    np.testing.assert_allclose(backend.to_numpy(x.grad), 4 * backend.to_numpy(x.data))


def test_resume_position_and_blas_threads():
    assert dist.resume_position({"step": 7}, 5, 16) == 7  # older checkpoints: by step
    assert dist.resume_position({"step": 3, "epoch": 1, "epoch_samples": 32}, 2, 16) == 4
    with pytest.raises(ValueError, match="multiple of the global batch 24"):
        dist.resume_position({"step": 3, "epoch": 1, "epoch_samples": 32}, 2, 24)
    from threadpoolctl import threadpool_info
    assert dist.set_blas_threads(1) == 1
    assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
    assert dist.set_blas_threads(0) == max(1, os.cpu_count() or 1)


def test_timeout_names_the_collective(monkeypatch, capsys):
    import minclip.distributed as d

    class Never:
        def Test(self):
            return False

    class FakeComm:
        def Get_rank(self):
            return 1

        def Get_size(self):
            return 2

        def Abort(self, code):
            self.code = code
    fake = FakeComm()
    monkeypatch.setattr(d, "comm", lambda: fake)
    with pytest.raises(d.DistributedTimeout, match="rank 1 of 2 .*bucket 1/3.*MINCLIP_DIST_TIMEOUT"):
        d._wait(Never(), "Allreduce of gradient bucket 1/3", timeout=0.05)
    assert fake.code == 1
    assert "never joined" in capsys.readouterr().err
