"""Helpers for the core tests (autograd, functional, gradcheck, backend, torch parity).

Data are drawn with NumPy from a fixed seed and moved with `backend.asarray`, and results come back
with `to_numpy`, so every test runs unchanged under `MINCLIP_BACKEND=cupy`: a test never calls `np.`
on minclip data, only on the NumPy copies these helpers give.

    from _helpers import tensor, ints, close
"""
import numpy as np

from minclip import Tensor, backend, to_numpy


def data(shape, seed=0, dtype=np.float64, scale=1.0, positive=False):
    """Seeded standard-normal NumPy array; `positive` makes it |x| + 0.5 (for log, sqrt, division)."""
    a = np.random.default_rng(seed).standard_normal(shape) * scale
    if positive:
        a = np.abs(a) + 0.5
    return a.astype(dtype)


def tensor(shape, seed=0, dtype=np.float64, requires_grad=True, scale=1.0, positive=False):
    """A Tensor of seeded normal data on the current backend, float64 and requiring grad by default."""
    return wrap(data(shape, seed, dtype, scale, positive), requires_grad)


def wrap(a, requires_grad=True):
    """A NumPy array (or anything array-like) as a Tensor on the current backend."""
    return Tensor(backend.asarray(a), requires_grad=requires_grad)


def transposed(shape, seed=0, requires_grad=True, positive=False):
    """A float64 Tensor of `shape` whose data is a transposed, non-contiguous view on the current backend."""
    a = backend.asarray(data(shape[::-1], seed, positive=positive)).T  # transposed after the move: a view anywhere
    assert not a.flags.c_contiguous, f"the transpose of {shape[::-1]} is still contiguous; pick another shape"
    return Tensor(a, requires_grad=requires_grad)


def strided(shape, seed=0, requires_grad=True):
    """A float64 Tensor of `shape` whose data is every other column of a wider array (a strided view)."""
    a = backend.asarray(data(shape[:-1] + (2 * shape[-1],), seed))[..., ::2]
    assert not a.flags.c_contiguous
    return Tensor(a, requires_grad=requires_grad)


def ints(high, shape, seed=0, low=0):
    """Seeded int64 array in [low, high) on the current backend (labels, token ids)."""
    return backend.asarray(np.random.default_rng(seed).integers(low, high, shape))


def host(x):
    """A Tensor or backend array as a NumPy array (a copy from the GPU under CuPy)."""
    return to_numpy(x)


def close(actual, expected, rtol=1e-10, atol=1e-12):
    """assert_allclose after moving both sides to NumPy."""
    np.testing.assert_allclose(to_numpy(actual), to_numpy(expected), rtol=rtol, atol=atol)


def cupy_usable():
    """True when CuPy is installed and sees a GPU (backend.use("cupy") would succeed)."""
    try:
        backend.array_module("cupy")
        return True
    except backend.BackendError:
        return False


def fake_tokenize(captions, length=16):
    """Stand-in tokenizer for data tests: the first bytes of each caption, zero-padded -> int64 (N, length)."""
    out = np.zeros((len(captions), length), np.int64)
    for i, c in enumerate(captions):
        b = c.encode()[:length]
        out[i, :len(b)] = list(b)
    return out
