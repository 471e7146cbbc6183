"""Reverse-mode automatic differentiation: `Tensor` and `Function`.

A `Tensor` wraps a NumPy/CuPy array. Every differentiable operation is a small
`Function` subclass with a `forward` on raw arrays and a `backward` that maps
output gradients (raw arrays) to input gradients (raw arrays), as in DeZero.
Calling a Function on tensors records it as the output's `creator`;
`Tensor.backward()` walks those records in reverse topological order.

Gradients are first-order only: `.grad` is a raw array, not a Tensor.
"""
import math
import weakref
from contextlib import contextmanager

import numpy as np

from . import backend, parallel


class Config:
    enable_backprop = True  # False inside `no_grad()`: no graph is recorded


@contextmanager
def using_config(name, value):
    """Set `Config.<name>` to `value` inside the block and restore it afterwards, even on an error.
    The one place a Config flag is changed (DeZero's using_config)."""
    if not hasattr(Config, name):
        raise AttributeError(f"using_config: Config has no setting {name!r}; it has enable_backprop")
    old = getattr(Config, name)
    setattr(Config, name, value)
    try:
        yield
    finally:
        setattr(Config, name, old)


def no_grad():
    """Run without recording the graph (evaluation, parameter updates)."""
    return using_config("enable_backprop", False)


def enable_grad():
    """Record the graph even inside an outer `no_grad()` (e.g. fitting a probe during evaluation)."""
    return using_config("enable_backprop", True)


def sum_to(g, shape):
    """Undo broadcasting: sum gradient `g` down to `shape` (the one place it is done)."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    if g.shape[lead:] == tuple(shape) and g.dtype.kind == "f" and g.dtype.itemsize >= 4 and g.flags.c_contiguous:
        # only leading axes to sum (a bias over (N, L, D)): one matrix-vector product with ones runs in
        # the BLAS, a few times faster than NumPy's reduction over the first axis
        g2 = g.reshape(-1, math.prod(shape))
        return (backend.get_array_module(g).ones(g2.shape[0], g.dtype) @ g2).reshape(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1)
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


class Tensor:
    """An array with a gradient.

    data: NumPy or CuPy array; Python numbers and lists become arrays of the
    current backend (floats in the default dtype, float32 unless changed). A NumPy scalar is kept as
    it is: the constant of `x * 0.5` (as_tensor), which both NumPy and CuPy take without making an array.
    """
    __array_priority__ = 200  # so `ndarray * Tensor` calls Tensor.__rmul__

    def __init__(self, data, requires_grad=False, name=None):
        if isinstance(data, Tensor):
            data = data.data
        if not backend.is_array(data) and not isinstance(data, np.generic):  # NumPy scalars stay: see as_tensor
            a = np.asarray(data)
            data = backend.asarray(a, dtype=backend.get_default_dtype() if a.dtype.kind == "f" else None)
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.creator = None  # the Function that produced this tensor, if any
        self.generation = 0  # depth in the graph, for topological ordering
        self.name = name

    # --- array-like attributes
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    dtype = property(lambda self: self.data.dtype)

    def __len__(self):
        return len(self.data)

    def __bool__(self):
        # NumPy's rule, not micrograd's identity comparison: `a == b` stays an elementwise boolean
        # Tensor (masks, accuracy), so truth must be asked explicitly. Otherwise `Tensor([1, 2]) in
        # [Tensor([5, 6])]` and `if a == b:` would be silently True (a non-empty object is truthy).
        if self.size != 1:
            raise ValueError(f"the truth value of a Tensor of shape {self.shape} is ambiguous; "
                             "use t.any() or t.all(), or compare tensors with `is`")
        return bool(self.data)

    def __repr__(self):
        body = str(backend.to_numpy(self.data)).replace("\n", "\n       ")
        extra = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({body}{extra})"

    def numpy(self):
        """The data as a NumPy array on the host (a copy from the GPU under CuPy)."""
        return backend.to_numpy(self.data)

    def item(self):
        return self.data.item()

    def detach(self):
        """Same data, cut from the graph."""
        return Tensor(self.data)

    def zero_grad(self):
        self.grad = None

    # --- backpropagation
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into `.grad` of every leaf that requires grad.

        grad: the gradient of some scalar w.r.t. this tensor; needed unless
        this tensor has a single element. The graph is freed afterwards unless
        `retain_graph=True`.
        """
        grad = self._seed_grad(grad)
        if self.creator is None:
            if self.requires_grad:
                self.grad = grad if self.grad is None else self.grad + grad
            return
        funcs = topological_order(self)
        grads = {id(self): grad}  # gradients of intermediate tensors, by id, until their Function runs
        for f in funcs:
            gys = [grads.pop(id(o), None) if o is not None else None for o in (ref() for ref in f.outputs)]
            if all(g is None for g in gys):
                continue  # none of f's outputs leads to self
            xp = backend.get_array_module(next(g for g in gys if g is not None))
            gxs = f.backward(*[xp.zeros(s, d) if g is None else g for g, (s, d) in zip(gys, f.out_meta)])
            for x, gx in zip(f.inputs, gxs if isinstance(gxs, tuple) else (gxs,)):
                if gx is None or not x.requires_grad:
                    continue
                if x.creator is None:  # a leaf: accumulate into .grad
                    x.grad = gx if x.grad is None else x.grad + gx
                else:  # summed over every path into x before x's creator runs
                    grads[id(x)] = gx if id(x) not in grads else grads[id(x)] + gx
        if not retain_graph:  # only now: freeing earlier could drop a tensor whose grad is still pending
            for f in funcs:
                f.free()

    def _seed_grad(self, grad):
        """The gradient backward starts from: `grad` as an array of this tensor's shape, or 1 for a
        single-element tensor."""
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: output has shape {self.shape}; a gradient can be implied only "
                                   "for a single-element output, pass backward(grad=...) of the same shape")
            return backend.get_array_module(self.data).ones_like(self.data)
        grad = backend.asarray(grad, like=self.data)  # a host gradient for a device tensor moves (once)
        if tuple(grad.shape) != self.shape:
            raise ValueError(f"backward: grad has shape {tuple(grad.shape)} but the tensor has shape {self.shape}")
        return grad

    # --- operators (the Functions live below)
    def __add__(self, o): return add(self, o)
    def __radd__(self, o): return add(o, self)
    def __sub__(self, o): return sub(self, o)
    def __rsub__(self, o): return sub(o, self)
    def __mul__(self, o): return mul(self, o)
    def __rmul__(self, o): return mul(o, self)
    def __truediv__(self, o): return div(self, o)
    def __rtruediv__(self, o): return div(o, self)
    def __matmul__(self, o): return matmul(self, o)
    def __rmatmul__(self, o): return matmul(o, self)
    def __pow__(self, p): return Pow(p)(self)
    def __neg__(self): return Neg()(self)
    def __getitem__(self, index): return GetItem(index)(self)

    # comparisons give boolean tensors with no gradient
    def __lt__(self, o): return Tensor(self.data < backend.unwrap(o))
    def __le__(self, o): return Tensor(self.data <= backend.unwrap(o))
    def __gt__(self, o): return Tensor(self.data > backend.unwrap(o))
    def __ge__(self, o): return Tensor(self.data >= backend.unwrap(o))
    def __eq__(self, o): return Tensor(self.data == backend.unwrap(o))
    def __ne__(self, o): return Tensor(self.data != backend.unwrap(o))
    # hashing stays by identity (tensors are dict keys); a dict compares hashes before calling __eq__,
    # and distinct live objects have distinct identity hashes, so lookups never ask a Tensor for its truth
    __hash__ = object.__hash__

    def any(self): return Tensor(self.data.any())
    def all(self): return Tensor(self.data.all())

    # --- shape and reductions
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return Reshape(shape)(self)

    def transpose(self, *axes):
        """Permute axes (all of them reversed when none are given), like ndarray.transpose."""
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return Transpose(axes or None)(self)

    permute = transpose

    @property
    def T(self):
        return Transpose(None)(self)

    def sum(self, axis=None, keepdims=False): return Sum(axis, keepdims)(self)
    def mean(self, axis=None, keepdims=False): return Mean(axis, keepdims)(self)
    def max(self, axis=None, keepdims=False): return Max(axis, keepdims)(self)
    def exp(self): return Exp()(self)
    def log(self): return Log()(self)
    def sqrt(self): return Sqrt()(self)
    def tanh(self): return Tanh()(self)
    def astype(self, dtype): return AsType(dtype)(self)


def as_tensor(x, like=None):
    """`x` as a Tensor. Numbers and lists go to the backend of array `like` and, when `like` is
    floating, take its dtype so float32 stays float32 (not for int/bool `like`: 0.5 would truncate)."""
    if isinstance(x, Tensor):
        return x
    if like is not None and not backend.is_array(x):
        a = np.asarray(x)
        dtype = like.dtype if like.dtype.kind == "f" else backend.get_default_dtype() if a.dtype.kind == "f" else None
        if a.ndim == 0:  # a number stays a NumPy scalar: NumPy and CuPy take it as is, no array on the device
            return Tensor(a.astype(dtype or a.dtype)[()])
        return Tensor(backend.asarray(a, dtype=dtype, like=like))
    return Tensor(x)


def topological_order(output):
    """The Functions that made Tensor `output`, in the order backward runs them: by generation, deepest
    first, so that a Function runs only after every Function that used its outputs has passed their
    gradients back. Found with a stack, not recursion: graphs can be thousands of Functions deep."""
    funcs, seen, stack = [], {id(output.creator)}, [output.creator]
    while stack:
        f = stack.pop()
        if f.inputs is None:
            raise RuntimeError("backward: the graph was freed by an earlier backward; "
                               "call backward(retain_graph=True) to keep it")
        funcs.append(f)
        for x in f.inputs:
            if x.creator is not None and id(x.creator) not in seen:
                seen.add(id(x.creator))
                stack.append(x.creator)
    funcs.sort(key=lambda f: f.generation, reverse=True)
    return funcs


class Function:
    """One differentiable operation: `forward(*arrays)` and `backward(*grads)`.

    Subclasses keep whatever backward needs as attributes (`self.y = ...`).
    Non-differentiable arguments (axes, labels, token ids) go to `__init__`.
    """
    inputs = outputs = None

    def __call__(self, *inputs):
        inputs = [as_tensor(x) for x in inputs]
        ys = self.forward(*[x.data for x in inputs])
        ys = ys if isinstance(ys, tuple) else (ys,)
        # NumPy reductions of 0-d results give scalars (np.float64); keep their dtype, not the default's
        ys = tuple(y if backend.is_array(y) else np.asarray(y) for y in ys)
        needs_grad = Config.enable_backprop and any(x.requires_grad for x in inputs)
        outputs = [Tensor(y, requires_grad=needs_grad) for y in ys]
        if needs_grad:
            self.inputs = inputs
            self.generation = max(x.generation for x in inputs)
            for y in outputs:
                y.creator, y.generation = self, self.generation + 1
            self.outputs = [weakref.ref(y) for y in outputs]
            self.out_meta = [(y.shape, y.dtype) for y in outputs]  # for zero grads of unused outputs
        return outputs[0] if len(outputs) == 1 else outputs

    def free(self):
        """Drop saved arrays and inputs once backward has used them."""
        gen = self.generation
        self.__dict__.clear()
        self.generation, self.inputs = gen, None

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, *gys):
        raise NotImplementedError


# ----------------------------------------------------------------------------- arithmetic
class Add(Function):
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        if a.shape != b.shape or a.ndim == 0 or a.dtype != b.dtype:
            return a + b
        xp = backend.get_array_module(a)
        y = xp.empty(a.shape, a.dtype)                    # the residual adds: large, a block per thread
        parallel.for_rows(lambda i, j: xp.add(a[i:j], b[i:j], out=y[i:j]), len(a), a)
        return y

    def backward(self, g):
        return sum_to(g, self.a_shape), sum_to(g, self.b_shape)


class Sub(Function):
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a - b

    def backward(self, g):
        return sum_to(g, self.a_shape), sum_to(-g, self.b_shape)


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return sum_to(g * self.b, self.a.shape), sum_to(g * self.a, self.b.shape)


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        ga = g / self.b
        return sum_to(ga, self.a.shape), sum_to(-ga * self.a / self.b, self.b.shape)


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


class Pow(Function):
    """x ** exponent for a constant exponent."""
    def __init__(self, exponent):
        self.exponent = exponent

    def forward(self, x):
        self.x = x
        return x ** self.exponent

    def backward(self, g):
        return g * self.exponent * self.x ** (self.exponent - 1)


class MatMul(Function):
    """a @ b with NumPy semantics: batch dimensions broadcast, 1-D operands promoted."""
    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0 or a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align "
                             f"(last dim of the first must equal the second-to-last of the second)")
        self.a, self.b = a, b
        return parallel.matmul(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a          # (.., M, K)
        b2 = b[:, None] if b.ndim == 1 else b          # (.., K, N)
        g2 = g.reshape(g.shape[:-1] + (1,) + g.shape[-1:]) if a.ndim == 1 else g
        g2 = g2[..., None] if b.ndim == 1 else g2      # (.., M, N)
        ga = sum_to(parallel.matmul(g2, b2.swapaxes(-1, -2)), a2.shape).reshape(a.shape)
        gb = sum_to(parallel.matmul(a2.swapaxes(-1, -2), g2), b2.shape).reshape(b.shape)
        return ga, gb


def add(a, b): return Add()(*_pair(a, b))
def sub(a, b): return Sub()(*_pair(a, b))
def mul(a, b): return Mul()(*_pair(a, b))
def div(a, b): return Div()(*_pair(a, b))
def matmul(a, b): return MatMul()(*_pair(a, b))


def _pair(a, b):
    """Both operands as tensors; a plain number takes the dtype of the tensor beside it."""
    if isinstance(a, Tensor):
        return a, as_tensor(b, like=a.data)
    return as_tensor(a, like=b.data), b


# ----------------------------------------------------------------------------- elementwise math
class Exp(Function):
    def forward(self, x):
        self.y = backend.get_array_module(x).exp(x)
        return self.y

    def backward(self, g):
        return g * self.y


class Log(Function):
    def forward(self, x):
        self.x = x
        return backend.get_array_module(x).log(x)

    def backward(self, g):
        return g / self.x


class Sqrt(Function):
    def forward(self, x):
        self.y = backend.get_array_module(x).sqrt(x)
        return self.y

    def backward(self, g):
        return g / (2 * self.y)


class Tanh(Function):
    def forward(self, x):
        self.y = backend.get_array_module(x).tanh(x)
        return self.y

    def backward(self, g):
        return g * (1 - self.y * self.y)


class AsType(Function):
    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.x_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, g):
        return g.astype(self.x_dtype)


# ----------------------------------------------------------------------------- shapes
class Reshape(Function):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, g):
        return g.reshape(self.x_shape)


class Transpose(Function):
    def __init__(self, axes=None):
        self.axes = None if axes is None else tuple(axes)

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, g):
        if self.axes is None:
            return g.transpose()
        return g.transpose(tuple(int(i) for i in np.argsort([a % g.ndim for a in self.axes])))  # (host ints)


class GetItem(Function):
    """x[index]; backward scatters (and for repeated advanced indices, adds) into zeros."""
    def __init__(self, index):
        self.index = _raw_index(index)

    def forward(self, x):
        self.x_shape, self.x_dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, g):
        xp = backend.get_array_module(g)
        gx = xp.zeros(self.x_shape, self.x_dtype)
        if _is_basic_index(self.index):
            gx[self.index] = g  # basic slicing never repeats an element
        else:
            backend.scatter_add(gx, self.index, g)
        return gx


def _raw_index(index):
    if isinstance(index, tuple):
        return tuple(backend.unwrap(i) for i in index)
    return backend.unwrap(index)


def _is_basic_index(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, slice, np.integer)) for i in items)


class Concat(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        xp = backend.get_array_module(xs[0])
        self.sizes = [x.shape[self.axis] for x in xs]
        return xp.concatenate(xs, axis=self.axis)

    def backward(self, g):
        xp = backend.get_array_module(g)
        return tuple(xp.split(g, np.cumsum(self.sizes)[:-1].tolist(), axis=self.axis))


class Stack(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        return backend.get_array_module(xs[0]).stack(xs, axis=self.axis)

    def backward(self, g):
        xp = backend.get_array_module(g)
        return tuple(xp.moveaxis(g, self.axis, 0))


class Split(Function):
    """Split `axis` into `sections` equal parts (one output each); the inverse of Concat."""
    def __init__(self, sections, axis=-1):
        self.sections, self.axis = sections, axis

    def forward(self, x):
        if x.shape[self.axis] % self.sections:
            raise ValueError(f"split: axis {self.axis} of shape {x.shape} does not divide into "
                             f"{self.sections} equal parts")
        return tuple(backend.get_array_module(x).split(x, self.sections, axis=self.axis))

    def backward(self, *gs):
        return backend.get_array_module(gs[0]).concatenate(gs, axis=self.axis)


def concat(tensors, axis=0):
    return Concat(axis)(*tensors)


def stack(tensors, axis=0):
    return Stack(axis)(*tensors)


def split(x, sections, axis=-1):
    """A tuple of `sections` equal parts of `x` along `axis`."""
    parts = Split(sections, axis)(x)
    return tuple(parts) if sections > 1 else (parts,)  # a Function with one output returns it bare


# ----------------------------------------------------------------------------- reductions
def _expand(g, shape, axis, keepdims):
    """Reshape a reduced gradient so it broadcasts back over the reduced axes."""
    if axis is not None and not keepdims:
        axes = (axis,) if isinstance(axis, int) else axis
        g = backend.get_array_module(g).expand_dims(g, tuple(a % len(shape) for a in axes))
    return g


class Sum(Function):
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x_shape = x.shape
        return x.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, g):
        xp = backend.get_array_module(g)
        return xp.broadcast_to(_expand(g, self.x_shape, self.axis, self.keepdims), self.x_shape).copy()


class Mean(Sum):
    def forward(self, x):
        y = super().forward(x)
        self.count = x.size // max(y.size, 1)  # elements averaged into each output
        return y / self.count

    def backward(self, g):
        return super().backward(g / self.count)


class Max(Function):
    """Max over axes; the gradient is shared equally among tied maxima."""
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x = x
        self.y = x.max(axis=self.axis, keepdims=True)
        return self.y if self.keepdims else self.y.reshape(x.max(axis=self.axis).shape)

    def backward(self, g):
        mask = (self.x == self.y).astype(g.dtype)  # float: dividing by an integer count would give float64
        g = _expand(g, self.x.shape, self.axis, self.keepdims)
        return g * mask / mask.sum(axis=self.axis, keepdims=True)
