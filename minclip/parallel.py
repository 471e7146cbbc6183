"""Several cores for every op, on request: one small thread pool runs an op's elementwise passes over
row blocks and shares the large matrix products, with BLAS held to one thread.

NumPy runs an elementwise op such as QuickGELU or LayerNorm on one core, and on a small CPU model these
ops are a third of a step. NumPy's ufuncs and matmul release the GIL while they work on a large array,
so plain Python threads, each handed its own block of rows, run on several cores at once. BLAS has
threads of its own, but they busy-wait for ~0.1 s after each product, so a second pool running
between two products would fight them for the cores (measured: no gain at all). Hence one pool for
both: while it is in use, NumPy's OpenBLAS is set to one thread (threadpoolctl) and `matmul` gives each
thread a block of the product's rows (its columns, when it has few rows; its leading axis, when
batched). Every block is computed by exactly the code the whole array would be and no sum is split, so
the elementwise ops give the same bits for any number of threads (tests/test_parallel.py). Products do
where the BLAS gives a block of rows the bits of the whole product; OpenBLAS 0.3.31 (NumPy 2.4.6's) does
not, not even between 1 and 2 of its own threads, and there they agree to float32 round-off.

    MINCLIP_NUM_THREADS   threads for minclip's ops (default 1: no pool, and BLAS keeps its own threads)

Why the default is 1: on the 2-core machine this project is developed on, handing a block to a
sleeping thread costs ~90 us, and OpenBLAS's own threads share the packed operands of a product, which
separate calls cannot. Measured there (tests/benchmarks/bench_step.py, batch 64, no PyTorch), 2 threads
against 1: tiny-vit 139-170 ms against 111-120 ms a step, rn-32 491-521 ms against 512 ms. The
elementwise ops themselves do run faster on two threads (QuickGELU on (4160, 512): 3.5 ms -> 2.2 ms once
BLAS runs on one thread); try MINCLIP_NUM_THREADS=N on a machine where hand-offs are cheaper.

Arrays of another backend (CuPy runs on its device) and work too small for a hand-off to pay (about
90 us here) take one plain call.
"""
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MIN_ELEMENTS = 1 << 18  # per thread, for elementwise work: a few float32 passes over 256k elements ~ 0.3 ms
MIN_FLOPS = 1 << 23     # per thread, for a matrix product: 8 MFLOP ~ 0.1 ms of one core

_num_threads = None
_pool = None
_blas = None  # threadpoolctl's hold on NumPy's OpenBLAS (one thread) while the pool exists


def num_threads():
    """Threads minclip's ops use: MINCLIP_NUM_THREADS, else 1 (see above)."""
    global _num_threads
    if _num_threads is None:
        value = os.environ.get("MINCLIP_NUM_THREADS", "")
        try:
            n = int(value) if value else 1
        except ValueError:
            raise ValueError(f"MINCLIP_NUM_THREADS={value!r}: expected a whole number of threads") from None
        if n < 1:
            raise ValueError(f"MINCLIP_NUM_THREADS={value!r}: expected at least 1 thread")
        _num_threads = n
    return _num_threads


def set_num_threads(n):
    """Use n threads from now on (1: every op on the calling thread). Returns the previous number."""
    global _num_threads, _pool
    if int(n) < 1:
        raise ValueError(f"set_num_threads({n!r}): expected at least 1 thread")
    previous = num_threads()
    if int(n) != previous and _pool is not None:
        _pool.shutdown()
        _pool = None
        _release_blas()
    _num_threads = int(n)
    return previous


def _ranges(n, k):
    """k consecutive ranges [(start, stop), ...] of about equal length covering range(n)."""
    edges = [n * i // k for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:]))


def blocks(n_rows, row_size):
    """Row ranges [(start, stop), ...] that split n_rows rows of row_size elements between the threads;
    one range when the array is small or there is one thread."""
    return _ranges(n_rows, max(1, min(num_threads(), n_rows * row_size // MIN_ELEMENTS, n_rows)))


def _share(fn, parts):
    """fn(*part) for every part: the pool takes all but the first, which the calling thread runs itself
    before it waits for the others (so two threads cost one hand-off)."""
    futures = [_get_pool().submit(fn, *part) for part in parts[1:]]
    fn(*parts[0])
    for f in futures:
        f.result()  # re-raises a worker's exception here


def _get_pool():
    """The pool (num_threads() - 1 workers: the calling thread works too), made on first use; from then on
    NumPy's OpenBLAS runs on one thread, since `matmul` shares the products out itself."""
    global _pool, _blas
    if _pool is None:
        from threadpoolctl import threadpool_limits
        _blas = threadpool_limits(limits=1, user_api="blas")  # kept: the limit lasts while this object does
        _pool = ThreadPoolExecutor(num_threads() - 1, thread_name_prefix="minclip")
    return _pool


def _release_blas():
    global _blas
    if _blas is not None:
        _blas.restore_original_limits()
        _blas = None


def for_rows(kernel, rows, like):
    """Call kernel(start, stop) on row blocks covering range(rows), in parallel when it pays.

    `like` is an array of the op (its size and backend decide): only NumPy arrays of at least
    MIN_ELEMENTS per thread are split."""
    parts = blocks(rows, like.size // rows) if isinstance(like, np.ndarray) and rows else [(0, rows)]
    if len(parts) == 1:
        kernel(0, rows)
    else:
        _share(kernel, parts)


def for_items(fn, items, sizes, like):
    """Call fn(item) for every item, the items shared between the threads in runs of about equal total
    size (sizes[i] elements each): independent updates such as the optimizer's, one per parameter."""
    total = sum(sizes)
    k = min(num_threads(), total // MIN_ELEMENTS, len(items)) if isinstance(like, np.ndarray) else 1
    if k <= 1:
        for item in items:
            fn(item)
        return
    ends, filled = [], 0                        # run t ends where the running size passes t/k of the total
    for i, size in enumerate(sizes):
        filled += size
        if filled * k >= total * (len(ends) + 1) and len(ends) < k - 1:
            ends.append(i + 1)
    starts = [0] + ends
    _share(lambda i, j: [fn(item) for item in items[i:j]], list(zip(starts, ends + [len(items)])))


def matmul(a, b):
    """a @ b for NumPy arrays of at least 2 dimensions, shared between the threads when it is large:
    by the leading (batch) axis, else by the rows of a, else (few rows) by the columns of b."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.ndim < 2 or b.ndim < 2 \
            or num_threads() == 1:
        return a @ b
    (m, k), n = a.shape[-2:], b.shape[-1]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    threads = min(num_threads(), 2 * m * k * n * math.prod(batch) // MIN_FLOPS)
    if threads <= 1 or (batch and batch[0] < threads):
        return a @ b
    out = np.empty(batch + (m, n), np.result_type(a, b))
    if batch:                                   # stacked products: whole matrices to each thread
        def part(i, j):
            np.matmul(a[i:j] if a.ndim == out.ndim and a.shape[0] > 1 else a,
                      b[i:j] if b.ndim == out.ndim and b.shape[0] > 1 else b, out=out[i:j])
        rows = batch[0]
    elif m >= n:                                # rows of the product: a contiguous block of out each
        def part(i, j):
            np.matmul(a[i:j], b, out=out[i:j])
        rows = m
    else:                                       # columns: each block computed whole, then copied in
        def part(i, j):
            out[:, i:j] = a @ b[:, i:j]
        rows = n
    _share(part, _ranges(rows, threads))
    return out
