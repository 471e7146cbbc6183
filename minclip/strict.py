"""A strict stand-in for CuPy: NumPy computes underneath, CuPy's rules apply on top.

Code that passes the suite on this backend (`MINCLIP_BACKEND=strict`, or `minclip.use("strict")`) keeps the
rules a GPU imposes, which plain NumPy never enforces. An array here is on a pretend device; like a
cupy.ndarray (CuPy's "Differences between CuPy and NumPy" and its ndarray reference) it

- refuses implicit conversion to NumPy: `np.asarray(x)`, `x.__array__()` and any NumPy function or ufunc
  given `x` raise TypeError;
- refuses to mix with NumPy arrays in one operation (`x + np.ones(3)` raises TypeError); Python and
  NumPy scalars are fine;
- moves only through explicit calls: `strict.asarray(host_array)` in, `x.get()` or `strict.asnumpy(x)` out;
- returns 0-d arrays from reductions and from indexing one element, never Python or NumPy scalars;
- counts every device-to-host transfer, in `syncs`: `.get()`, `asnumpy`, `float()`, `int()`, `bool()`,
  `.item()`, `.tolist()` and `repr()` each wait for the device on a GPU.

Only the functions below exist on the module (those of CuPy's that minclip uses): anything else is an
AttributeError, as a NumPy-only call would be on CuPy.
"""
import math
from contextlib import contextmanager

import numpy as np

syncs = 0  # device-to-host transfers so far


def _sync():
    global syncs
    syncs += 1


@contextmanager
def count_syncs():
    """`with count_syncs() as n: ...` then `n[0]`: the transfers made inside the block."""
    start, box = syncs, [0]
    try:
        yield box
    finally:
        box[0] = syncs - start


class ndarray:
    """An array on the pretend device (a NumPy array underneath, in `_a`)."""
    __slots__ = ("_a",)
    __array_ufunc__ = None  # NumPy ufuncs refuse it, and `np_scalar * x` falls back to x.__rmul__

    def __init__(self, a):
        self._a = a

    # --- refused: implicit conversion, NumPy's functions
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
                        "NumPy array explicitly.")

    def __array_function__(self, func, types, args, kwargs):
        return NotImplemented  # NumPy raises TypeError: no implementation for this type

    # --- explicit and counted: device to host
    def get(self):
        _sync()
        return self._a.copy()

    def item(self):
        _sync()
        return self._a.item()

    def tolist(self):
        _sync()
        return self._a.tolist()

    def __float__(self):
        _sync()
        return float(self._a)

    def __int__(self):
        _sync()
        return int(self._a)

    def __bool__(self):
        _sync()
        return bool(self._a)

    def __index__(self):
        _sync()
        return self._a.__index__()

    def __repr__(self):
        _sync()
        return f"strict.{self._a!r}"

    # --- what stays on the device
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    dtype = property(lambda self: self._a.dtype)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))
    real = property(lambda self: ndarray(self._a.real))
    __hash__ = None

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (ndarray(np.asarray(row)) for row in self._a)

    def __getitem__(self, index):
        return _wrap(self._a[_index(index)])

    def __setitem__(self, index, value):
        self._a[_index(index)] = _operand(value)


def _wrap(result):
    """NumPy's result as the device's: arrays (and scalars, as 0-d arrays) wrapped, tuples element-wise."""
    if isinstance(result, (np.ndarray, np.generic)):
        return ndarray(np.asarray(result))
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    if isinstance(result, list):
        return [_wrap(r) for r in result]
    return result


def _operand(x):
    """An argument of an operation: a device array (unwrapped) or a scalar; a NumPy array is refused."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}: a NumPy array cannot be mixed with a device array; move it "
                        "with strict.asarray (cupy.asarray) first")
    if isinstance(x, (list, tuple)):
        return type(x)(_operand(v) for v in x)
    return x


def _index(index):
    """An index: device arrays unwrapped; integers, slices, None and Ellipsis as they are (CuPy converts
    host index arrays itself)."""
    if isinstance(index, tuple):
        return tuple(_index(i) for i in index)
    return index._a if isinstance(index, ndarray) else index


def _method(name):
    def method(self, *args, **kwargs):
        return _wrap(getattr(self._a, name)(*_operand(args), **{k: _operand(v) for k, v in kwargs.items()}))
    method.__name__ = name
    return method


for _name in ("reshape", "transpose", "swapaxes", "astype", "copy", "sum", "mean", "max", "min", "argmax",
              "argmin", "any", "all", "ravel", "squeeze", "clip", "var", "std", "prod", "cumsum", "dot", "take",
              "repeat", "flatten", "fill", "view", "nonzero", "diagonal", "argsort", "sort"):
    setattr(ndarray, _name, _method(_name))


def _binary(name):
    op = getattr(np.ndarray, name)

    def method(self, other):
        return _wrap(op(self._a, _operand(other)))
    method.__name__ = name
    return method


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
              "__floordiv__", "__rfloordiv__", "__mod__", "__pow__", "__rpow__", "__matmul__", "__rmatmul__",
              "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ipow__", "__and__", "__or__", "__xor__",
              "__rand__", "__ror__", "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__", "__lshift__",
              "__rshift__"):
    setattr(ndarray, _name, _binary(_name))
for _name in ("__neg__", "__pos__", "__abs__", "__invert__"):
    setattr(ndarray, _name, _method(_name))


# ----------------------------------------------------------------------------- the module's functions
def _function(fn, name):
    def function(*args, **kwargs):
        return _wrap(fn(*_operand(args), **{k: _operand(v) for k, v in kwargs.items()}))
    function.__name__ = name
    return function


class _Ufunc:
    """A ufunc of the device: called, or used through the methods CuPy documents for ufuncs."""

    def __init__(self, ufunc):
        self._u, self.__name__ = ufunc, ufunc.__name__

    def __call__(self, *args, **kwargs):
        return _wrap(self._u(*_operand(args), **{k: _operand(v) for k, v in kwargs.items()}))

    def at(self, a, indices, b=None):
        self._u.at(_operand(a), _index(indices), *(() if b is None else (_operand(b),)))

    def reduce(self, a, *args, **kwargs):
        return _wrap(self._u.reduce(_operand(a), *args, **kwargs))

    def outer(self, a, b, **kwargs):
        return _wrap(self._u.outer(_operand(a), _operand(b), **kwargs))


_UFUNCS = ("add", "subtract", "multiply", "divide", "true_divide", "negative", "power", "exp", "log", "log1p",
           "expm1", "sqrt", "square", "reciprocal", "tanh", "sin", "cos", "abs", "absolute", "sign", "maximum",
           "minimum", "greater", "greater_equal", "less", "less_equal", "equal", "not_equal", "logical_and",
           "logical_or", "logical_not", "isfinite", "isnan", "isinf", "floor", "ceil")
_FUNCTIONS = ("where", "clip", "sum", "mean", "max", "min", "argmax", "argmin", "concatenate", "stack", "split",
              "moveaxis", "transpose", "swapaxes", "expand_dims", "squeeze", "broadcast_to", "einsum", "tensordot",
              "matmul", "dot", "tril", "triu", "flatnonzero", "nonzero", "any", "all", "allclose", "ascontiguousarray",
              "zeros_like", "ones_like", "empty_like", "full_like", "pad", "take", "reshape", "ravel", "cumsum",
              "prod", "var", "std", "argsort", "sort", "unique", "diag", "outer", "isclose", "array_equal")
for _name in _UFUNCS:
    globals()[_name] = _Ufunc(getattr(np, _name))
for _name in _FUNCTIONS:
    globals()[_name] = _function(getattr(np, _name), _name)

# dtypes and helpers that are not arrays, as CuPy re-exports NumPy's
float16, float32, float64, int32, int64, uint8, bool_ = np.float16, np.float32, np.float64, np.int32, np.int64, \
    np.uint8, np.bool_
dtype, promote_types, result_type, finfo, iinfo = np.dtype, np.promote_types, np.result_type, np.finfo, np.iinfo
inf, nan, pi, newaxis = np.inf, np.nan, np.pi, np.newaxis


# ----------------------------------------------------------------------------- host <-> device
def asarray(a, dtype=None):
    """Host data (a NumPy array, list or scalar) to the device, or a device array as it is: cupy.asarray."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else ndarray(a._a.astype(dtype))
    return ndarray(np.array(a, dtype=dtype))  # a copy, as a transfer to the device is


def array(a, dtype=None, copy=True):
    return ndarray(a._a.astype(dtype or a.dtype, copy=copy) if isinstance(a, ndarray) else np.array(a, dtype=dtype))


def asnumpy(a):
    """A device array on the host (counted); anything else through np.asarray: cupy.asnumpy."""
    if isinstance(a, ndarray):
        return a.get()
    return np.asarray(a)


def _creator(fn):
    def create(*args, **kwargs):
        return ndarray(fn(*args, **kwargs))
    create.__name__ = fn.__name__
    return create


zeros, ones, empty, full, arange, eye, linspace = (_creator(f) for f in (np.zeros, np.ones, np.empty, np.full,
                                                                        np.arange, np.eye, np.linspace))


# ----------------------------------------------------------------------------- submodules CuPy has
class _Namespace:
    def __init__(self, **members):
        self.__dict__.update(members)


linalg = _Namespace(norm=_function(np.linalg.norm, "norm"))
lib = _Namespace(stride_tricks=_Namespace(as_strided=lambda a, shape=None, strides=None: ndarray(
    np.lib.stride_tricks.as_strided(a._a, shape, strides))))
_erf = np.frompyfunc(math.erf, 1, 1)
special = _Namespace(erf=lambda x: ndarray(np.asarray(_erf(x._a), dtype=x.dtype)))  # cupyx.scipy.special.erf
