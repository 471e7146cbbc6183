"""Array backend: NumPy by default, CuPy as a drop-in GPU backend.

Every op works on raw arrays through ``xp = get_array_module(x)``, so the same code
runs on the CPU (NumPy) and the GPU (CuPy), as in DeZero. The rule:

- `use(name)` (or MINCLIP_BACKEND=cupy) sets only the default for *new* arrays:
  parameters a layer creates, tensors made from Python lists and numbers, `randn`.
- Everything else follows its inputs: an op's output lives where its inputs do, and
  `Module.to("cupy")` moves a model's arrays without touching the default.

Random numbers are always drawn with NumPy and then moved, so a seed gives the
same numbers on both backends (tests rely on this).

A third backend, "strict" (minclip/strict.py), is NumPy underneath with CuPy's rules on top: no implicit
conversion to NumPy, no mixing with NumPy arrays, 0-d results, every device-to-host transfer counted.
The suite runs on it to prove device code without a GPU.
"""
import ctypes
import math
import os
import sys
from contextlib import contextmanager

import numpy as np

from . import strict

try:  # CuPy is optional: `pip install minclip[cuda12]` or `[cuda13]`
    import cupy
except Exception:  # ImportError, or a broken CUDA install that fails on import
    cupy = None

NAMES = ("numpy", "cupy", "strict")  # NumPy on the CPU, CuPy on a CUDA GPU, CuPy's rules on the CPU
xp = np  # the array module for new arrays; read it as `backend.xp`
_name = "numpy"
_default_dtype = np.dtype(np.float32)
_rng = np.random.default_rng(0)


class BackendError(RuntimeError):
    """The requested backend cannot be used on this machine."""


def array_module(name):
    """The array module of backend `name` ("numpy", "cupy" or "strict"), checked to be usable; changes nothing."""
    name = name.lower()
    if name == "numpy":
        return np
    if name == "strict":
        return strict
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; choose one of {NAMES}")
    if cupy is None:
        raise BackendError("backend 'cupy' requested but CuPy is not installed; "
                           "install it with `pip install minclip[cuda12]` (or [cuda13])")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, no device
        raise BackendError(f"backend 'cupy' requested but no CUDA GPU is usable: {e}") from e
    if n == 0:
        raise BackendError("backend 'cupy' requested but no CUDA GPU was found")
    return cupy


def use(name):
    """Set the default backend for new arrays: "numpy", "cupy" or "strict". Returns its array module."""
    global xp, _name
    xp, _name = array_module(name), name.lower()
    return xp


def current():
    """Name of the default backend for new arrays: "numpy", "cupy" or "strict"."""
    return _name


def unwrap(x):
    """The array inside a Tensor; anything else unchanged (arrays have a `.data` too: check first)."""
    if is_array(x) or isinstance(x, np.generic):
        return x
    return getattr(x, "data", x)


def get_array_module(x):
    """NumPy, CuPy or the strict stand-in, whichever holds `x` (a Tensor or an array)."""
    x = unwrap(x)
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy
    if isinstance(x, strict.ndarray):
        return strict
    return np


def is_array(x):
    return isinstance(x, (np.ndarray, strict.ndarray)) or (cupy is not None and isinstance(x, cupy.ndarray))


def asarray(x, dtype=None, like=None):
    """`x` as an array of the backend that holds `like` (an array or Tensor), or of the
    default backend when `like` is None; no copy when it already is one."""
    x = unwrap(x)
    target = xp if like is None else get_array_module(like)
    if target is np:
        return np.asarray(to_numpy(x), dtype=dtype)  # to_numpy: a CuPy array is copied to the host
    return target.asarray(x, dtype=dtype)


def to_numpy(x):
    """`x` (Tensor, NumPy or CuPy array, scalar) as a NumPy array on the host."""
    x = unwrap(x)
    if (cupy is not None and isinstance(x, cupy.ndarray)) or isinstance(x, strict.ndarray):
        return x.get()  # the one place data leaves the device
    return np.asarray(x)


def get_default_dtype():
    """Floating dtype of new parameters and of tensors made from Python floats."""
    return _default_dtype


def set_default_dtype(dtype):
    global _default_dtype
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"default dtype must be floating point, got {dtype}")
    _default_dtype = dtype


@contextmanager
def default_dtype(dtype):
    """Temporarily change the default dtype, e.g. float64 for gradient checks."""
    old = _default_dtype
    set_default_dtype(dtype)
    try:
        yield
    finally:
        set_default_dtype(old)


# ----------------------------------------------------------------------------- random numbers
def manual_seed(seed):
    """Reseed the global generator used when no `rng` is passed."""
    global _rng
    _rng = np.random.default_rng(seed)


def get_rng(rng=None):
    """A NumPy Generator: `rng` itself, one seeded with int `rng`, or the global one."""
    if rng is None:
        return _rng
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def randn(*shape, std=1.0, rng=None, dtype=None, like=None):
    """Normal(0, std) samples of `shape`, drawn by NumPy, then moved to the backend of
    `like` (default: the default backend)."""
    a = get_rng(rng).standard_normal(shape) * std
    return asarray(a, dtype=dtype or _default_dtype, like=like)


def rand(*shape, rng=None, dtype=None, like=None):
    """Uniform [0, 1) samples of `shape` on the backend of `like` (default: the default backend)."""
    return asarray(get_rng(rng).random(shape), dtype=dtype or _default_dtype, like=like)


def randint(low, high, shape, rng=None):
    """Integer samples in [low, high) as int64 on the default backend."""
    return asarray(get_rng(rng).integers(low, high, size=shape), dtype=np.int64)


# ----------------------------------------------------------------------------- special functions
_np_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x):
    """Elementwise error function (NumPy has none; math.erf is exact to round-off)."""
    xp = get_array_module(x)
    if xp is np:
        return np.asarray(_np_erf(x), dtype=x.dtype)  # frompyfunc gives a Python float for 0-d input
    if xp is strict:
        return strict.special.erf(x)
    import cupyx.scipy.special  # here, not at the top: CuPy is optional
    return cupyx.scipy.special.erf(x)


def scatter_add(target, index, values):
    """target[index] += values, accumulating repeated indices (np.add.at)."""
    xp = get_array_module(target)
    if xp is np or hasattr(xp.add, "at"):  # CuPy >= 13 has ufunc.at like NumPy
        xp.add.at(target, index, values)
    else:
        import cupyx  # optional, as above
        cupyx.scatter_add(target, index, values)


# ----------------------------------------------------------------------------- machine info
def info():
    """Backend, device and BLAS as a dict of strings (`minclip info`)."""
    d = {"backend": _name, "numpy": np.__version__, "default_dtype": str(_default_dtype)}
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        d["blas"] = f"{cfg.get('name')} {cfg.get('version', '')}".strip()
    except Exception:
        d["blas"] = "unknown"
    d["cpu_count"] = str(os.cpu_count())
    if _name == "cupy":
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        d["device"] = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        d["cupy"] = cupy.__version__
    else:
        d["device"] = "cpu (the strict stand-in for a GPU)" if _name == "strict" else "cpu"
        d["cupy"] = cupy.__version__ if cupy is not None else "not installed"
    return d


if os.environ.get("MINCLIP_BACKEND"):
    use(os.environ["MINCLIP_BACKEND"])


_malloc_kept = None


def keep_freed_memory():
    """Let the C allocator keep freed blocks of up to 32 MB for reuse (Linux with glibc; elsewhere a no-op).

    NumPy takes every array from malloc. By default glibc serves large blocks (above 128 KB, a limit it
    raises as it goes) with a fresh mmap and hands them back to the kernel on free, so every training
    step faults its activations in again, page by page, and the kernel zero-fills each page: a QuickGELU
    of tiny-rn's text tower on a (64, 16, 512) array took 3.4 ms inside a step and 1.3 ms with the
    blocks kept. Setting both thresholds (setting one alone stops glibc raising the other) keeps freed
    memory in the heap for the next step. Training calls this once; returns whether it took effect.
    """
    global _malloc_kept
    if _malloc_kept is None:
        _malloc_kept = False
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None) if sys.platform.startswith("linux") else None
        if mallopt is not None:
            M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3                      # from <malloc.h>
            _malloc_kept = bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 512 << 20))
    return _malloc_kept
