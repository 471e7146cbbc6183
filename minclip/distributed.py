"""Data-parallel training over MPI: K processes, each with a copy of the model and 1/K of the global batch.

The paper trained with a 32,768-pair batch spread over many GPUs (Section 2.5); the contrastive loss
needs every image compared with every caption of the *global* batch, so each rank gathers the
features of all ranks (`all_gather`, open_clip's `gather_with_grad`) and computes its own rows of the
N x N logits (`minclip.loss.clip_loss_global`). After backward the gradients are averaged
(`average_gradients`), so every rank takes the same AdamW step and the copies stay identical.

    mpiexec -n 2 minclip train --batch-size 64            # global batch 128
    mpiexec -n 2 python -m mpi4py -m minclip.cli train ...

Without mpi4py, or under a plain `python` not launched by mpiexec, world_size() is 1, every function
here is the identity, and mpi4py is not even imported. See docs/distributed.md.

Collectives are issued non-blocking and polled (`_wait`): a rank that waits longer than TIMEOUT
seconds for a silent peer prints which collective hung and aborts the whole job.
"""
import os
import sys
import time

import numpy as np

from . import backend
from .autograd import Function

TIMEOUT = float(os.environ.get("MINCLIP_DIST_TIMEOUT", 300))  # seconds a rank waits in one collective
BUCKET_BYTES = 4 << 20       # gradient bytes per Allreduce: few large calls, not one per parameter
_LAUNCH_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "HYDRA_CONTROL_FD")
_state = {"comm": None, "nccl": None, "blas": None}
comm_seconds = 0.0           # time spent inside collectives, summed (for the scaling measurement)


class DistributedTimeout(RuntimeError):
    pass


# ----------------------------------------------------------------------------- who am I
def launched_by_mpi():
    """True when an MPI launcher (mpiexec) started this process: it leaves PMI/PMIx variables behind."""
    return any(v in os.environ for v in _LAUNCH_VARS)


def comm():
    """MPI.COMM_WORLD, or None for a single process (mpi4py absent or not launched by mpiexec)."""
    if _state["comm"] is None and launched_by_mpi():
        try:
            from mpi4py import MPI
        except ImportError:
            return None
        _state["comm"] = MPI.COMM_WORLD
    return _state["comm"]


def rank():
    c = comm()
    return c.Get_rank() if c is not None else 0


def world_size():
    c = comm()
    return c.Get_size() if c is not None else 1


def is_main():
    """Rank 0 alone prints, logs, plots and writes checkpoints."""
    return rank() == 0


# ----------------------------------------------------------------------------- waiting with a timeout
def _wait(request, what, timeout=None):
    """Poll a non-blocking MPI request; after `timeout` s print the problem and abort every rank.

    MPI has no way to cancel a collective another rank never joins, so a timed-out job cannot
    continue: Abort is the only way out that does not leave the other ranks waiting forever."""
    global comm_seconds
    timeout = TIMEOUT if timeout is None else timeout
    t0 = time.perf_counter()
    sleep = 1e-5
    while not request.Test():
        waited = time.perf_counter() - t0
        if waited > timeout:
            err = DistributedTimeout(
                f"minclip.distributed: rank {rank()} of {world_size()} waited {waited:.0f} s in {what}; the "
                "other rank(s) never joined (crashed or hung; see their output above). Aborting the job. "
                "Raise the limit with MINCLIP_DIST_TIMEOUT=SECONDS if a step is legitimately that slow.")
            print(err, file=sys.stderr, flush=True)
            comm().Abort(1)
            raise err  # only reached when Abort is a stub (tests)
        time.sleep(sleep)
        sleep = min(sleep * 2, 1e-3)  # spin briefly for fast collectives, then back off
    comm_seconds += time.perf_counter() - t0


# ----------------------------------------------------------------------------- host staging / NCCL
def _host(a):
    """A contiguous host array for MPI (a copy from the GPU under CuPy; see _nccl for the direct path)."""
    return np.array(backend.to_numpy(a), order="C")  # a private C-contiguous copy MPI may write to


def _like(host, a):
    """The host result back on the device of `a`."""
    return backend.get_array_module(a).asarray(host)


def _nccl():
    """A cupy.cuda.nccl communicator over the MPI ranks, or None (NumPy arrays, or NCCL unavailable).

    Rank 0 makes the unique id and MPI broadcasts it; each rank uses GPU (rank % device count).
    Not tested here: this machine has no GPU. Without NCCL, GPU arrays are staged through host memory."""
    if _state["nccl"] is None:
        _state["nccl"] = False
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError:
            return None
        uid = comm().bcast(nccl.get_unique_id() if rank() == 0 else None, root=0)
        cupy.cuda.Device(rank() % cupy.cuda.runtime.getDeviceCount()).use()
        _state["nccl"] = nccl.NcclCommunicator(world_size(), uid, rank())
    return _state["nccl"] or None


def _nccl_dtype(a):
    from cupy.cuda import nccl
    return {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64, "float16": nccl.NCCL_FLOAT16}[str(a.dtype)]


def _on_gpu(a):
    return hasattr(a, "get") and hasattr(a, "data")  # a cupy.ndarray


def allreduce_sum(a, what="Allreduce"):
    """Sum of `a` (any shape) over ranks, as a new array on a's device."""
    if _on_gpu(a) and _nccl():
        import cupy
        from cupy.cuda import nccl
        a = cupy.ascontiguousarray(a)
        out = cupy.empty_like(a)
        stream = cupy.cuda.get_current_stream()
        _nccl().allReduce(a.data.ptr, out.data.ptr, a.size, _nccl_dtype(a), nccl.NCCL_SUM, stream.ptr)
        stream.synchronize()
        return out
    from mpi4py import MPI
    send = _host(a)
    recv = send.copy()
    _wait(comm().Iallreduce(send, recv, op=MPI.SUM), what)
    return _like(recv, a)


def allgather(a, what="Allgather"):
    """(K * n, ...) : the (n, ...) arrays of all ranks stacked in rank order (equal n on every rank)."""
    k = world_size()
    if _on_gpu(a) and _nccl():
        import cupy
        a = cupy.ascontiguousarray(a)
        out = cupy.empty((k * a.shape[0],) + a.shape[1:], a.dtype)
        stream = cupy.cuda.get_current_stream()
        _nccl().allGather(a.data.ptr, out.data.ptr, a.size, _nccl_dtype(a), stream.ptr)
        stream.synchronize()
        return out
    send = _host(a)
    recv = np.empty((k * send.shape[0],) + send.shape[1:], send.dtype)
    _wait(comm().Iallgather(send, recv), what)
    return _like(recv, a)


def reduce_scatter_sum(a, what="Reduce_scatter"):
    """Rank r's block r of the (K * n, ...) array summed over ranks -> (n, ...)."""
    k = world_size()
    n = a.shape[0] // k
    if _on_gpu(a) and _nccl():
        import cupy
        from cupy.cuda import nccl
        a = cupy.ascontiguousarray(a)
        out = cupy.empty((n,) + a.shape[1:], a.dtype)
        stream = cupy.cuda.get_current_stream()
        _nccl().reduceScatter(a.data.ptr, out.data.ptr, out.size, _nccl_dtype(a), nccl.NCCL_SUM, stream.ptr)
        stream.synchronize()
        return out
    from mpi4py import MPI
    send = _host(a)
    recv = np.empty((n,) + send.shape[1:], send.dtype)
    _wait(comm().Ireduce_scatter_block(send, recv, op=MPI.SUM), what)
    return _like(recv, a)


# ----------------------------------------------------------------------------- autograd
class AllGather(Function):
    """(n, d) local features -> (K*n, d) features of the global batch, rank r's rows at [r*n, (r+1)*n).

    Every rank computes a loss from the gathered features, and the total objective is the sum of
    those losses, so the gradient of rank r's slice is the sum over ranks of the gradients each
    rank's loss sends to that slice: a reduce-scatter (open_clip's gather_with_grad)."""
    def forward(self, x):
        return allgather(x, "Allgather of features")

    def backward(self, g):
        return reduce_scatter_sum(g, "Reduce_scatter of feature gradients")


def all_gather(x):
    """Gather a feature Tensor (n, d) from all ranks -> (K*n, d); the identity on one process."""
    return AllGather()(x) if world_size() > 1 else x


# ----------------------------------------------------------------------------- gradients and weights
def average_gradients(params, bucket_bytes=BUCKET_BYTES):
    """Replace each `p.grad` by its mean over ranks, one Allreduce per bucket of ~bucket_bytes.

    Gradients are packed into flat buffers, one dtype per buffer, so a model with ~100 parameter tensors
    costs a handful of calls, not 100."""
    k = world_size()
    if k == 1:
        return
    params = [p for p in params if p.grad is not None]
    buckets, cur, size = [], [], 0
    for p in params:
        if cur and (size + p.grad.nbytes > bucket_bytes or p.grad.dtype != cur[0].grad.dtype):
            buckets.append(cur)
            cur, size = [], 0
        cur.append(p)
        size += p.grad.nbytes
    if cur:
        buckets.append(cur)
    for i, bucket in enumerate(buckets):
        xp = backend.get_array_module(bucket[0].grad)
        flat = xp.concatenate([p.grad.ravel() for p in bucket])
        flat = allreduce_sum(flat, f"Allreduce of gradient bucket {i + 1}/{len(buckets)}") / k
        offset = 0
        for p in bucket:
            p.grad = flat[offset:offset + p.grad.size].reshape(p.grad.shape)
            offset += p.grad.size


def average_scalar(value):
    """Mean of a float over ranks (the logged loss; and a NaN on any rank is a NaN on all)."""
    if world_size() == 1:
        return value
    return float(allreduce_sum(np.array([value], np.float64), "Allreduce of the loss value")[0]) / world_size()


def broadcast_model(model):
    """Copy rank 0's parameters and buffers (BatchNorm running statistics) to every rank, in place."""
    if world_size() == 1:
        return
    state = model.state_dict()  # host copies
    for i, key in enumerate(sorted(state)):
        buf = np.array(state[key], order="C")  # a C-contiguous copy; unlike ascontiguousarray it keeps 0-d shape
        _wait(comm().Ibcast(buf, root=0), f"Bcast of {key}")
        state[key] = buf
    model.load_state_dict(state)


def barrier(what="Barrier"):
    if world_size() > 1:
        _wait(comm().Ibarrier(), what)


# ----------------------------------------------------------------------------- data sharding
class ShardedLoader:
    """Rank r's share of a DataLoader's epochs: K ranks x batch B see the same items per step as one
    process with batch K*B. Global batch k is positions [k*K*B, (k+1)*K*B) of the epoch's
    permutation (loader.order(epoch)); rank r takes the r-th block of B of it. Full global batches
    only (drop_last), so every rank runs the same number of steps."""
    def __init__(self, loader, rank=None, world_size=None):
        self.loader = loader
        self.rank = globals()["rank"]() if rank is None else rank
        self.world_size = globals()["world_size"]() if world_size is None else world_size
        self.batch_size = loader.batch_size                  # per rank
        self.global_batch = loader.batch_size * self.world_size

    def __len__(self):
        return len(self.loader.dataset) // self.global_batch

    @property
    def dataset(self):
        return self.loader.dataset

    @property
    def skipped(self):
        return self.loader.skipped  # unreadable items dropped by this rank's batches, over all epochs

    def indices(self, epoch, start_batch=0):
        """[(B,) int64 item indices of this rank for each remaining step of `epoch`]."""
        order, G, B, r = self.loader.order(epoch), self.global_batch, self.batch_size, self.rank
        return [order[k * G + r * B:k * G + (r + 1) * B] for k in range(start_batch, len(self))]

    def iter_epoch(self, epoch, start_batch=0):
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"ShardedLoader: start_batch must be in [0, {len(self)}], got {start_batch}")
        return self.loader._generate(self.indices(epoch, start_batch), int(epoch))


def shard(loader):
    """The loader itself on one process, else rank r's ShardedLoader."""
    return loader if world_size() == 1 else ShardedLoader(loader)


def resume_position(state, steps_per_epoch, global_batch):
    """The global step at which to continue a checkpoint `state`, possibly written with another K.

    Checkpoints record `epoch` and `epoch_samples` (items of that epoch's permutation already used);
    with a new global batch G the run restarts at batch epoch_samples / G of that epoch, i.e. at the
    same sample offset. Older checkpoints (step only) continue by step."""
    if "epoch_samples" not in state:
        return state["step"]
    epoch, done = state["epoch"], state["epoch_samples"]
    if done % global_batch:
        raise ValueError(f"--resume: the checkpoint stopped {done} samples into epoch {epoch + 1}, not a multiple "
                         f"of the global batch {global_batch} (processes x --batch-size); pick a batch size "
                         "that divides it, or resume from an end-of-epoch checkpoint")
    return epoch * steps_per_epoch + min(done // global_batch, steps_per_epoch)


# ----------------------------------------------------------------------------- threads and launching
def set_blas_threads(n=0):
    """Limit BLAS threads of this process to n (0: cores // K, at least 1) so K ranks on one machine do
    not oversubscribe the cores (threadpoolctl); returns n, or None without threadpoolctl."""
    n = n or max(1, (os.cpu_count() or 1) // world_size())
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    _state["blas"] = threadpool_limits(limits=n, user_api="blas")  # kept alive: the limit lasts while it does
    return n


def run_or_abort(fn, *args):
    """Call fn(*args) -> exit code; with K > 1, an exception or a non-zero code on this rank aborts every
    rank, as `python -m mpi4py` does, so the others do not wait for it until the timeout."""
    if world_size() == 1:
        return fn(*args)
    try:
        code = fn(*args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        comm().Abort(code)
    return code


def from_main(obj):
    """Rank 0's value of a small picklable object (a run folder name) on every rank."""
    return obj if world_size() == 1 else comm().bcast(obj, root=0)
