# %% [markdown]
# # a01 · Backward of `mul`, `matmul` and `sum`, with broadcasting
#
# minclip's autograd (`minclip/autograd.py`) is a tape of small `Function`s, as in DeZero: each has a
# `forward(*arrays)` on raw NumPy arrays and a `backward(g)` that maps the gradient of the loss with
# respect to the output, $g = \partial L / \partial y$, to the gradients with respect to each input.
# Here you write three of them.
#
# **Broadcasting.** NumPy lets `a * b` combine shapes `(3, 4)` and `(4,)`: `b` is used once per row.
# Every use contributes to its gradient, so the gradient of `b` is the *sum* of the per-use gradients
# over the broadcast axes. minclip undoes broadcasting in one place, `sum_to(g, shape)`, and so should you.
#
# | op | forward | backward |
# |---|---|---|
# | `Mul` | $y = a \odot b$ | $\bar a = \mathrm{sum\_to}(g \odot b)$, $\bar b = \mathrm{sum\_to}(g \odot a)$ |
# | `MatMul` | $Y = A B$, $A \in \mathbb{R}^{M\times K}$, $B \in \mathbb{R}^{K\times N}$ | $\bar A = G B^\top$, $\bar B = A^\top G$ |
# | `Sum` | $y = \sum_{i \in \text{axis}} x_i$ | $\bar x_i = g$ broadcast back over the summed axis |

# %% setup
import numpy as np

from minclip import Function, Tensor, backend, gradcheck
from minclip.autograd import sum_to
from minclip.gradcheck import check_close, check_grad

rng = np.random.default_rng(0)


def randn(*shape):
    """A float64 Tensor of standard-normal numbers that requires grad (gradcheck needs float64)."""
    return Tensor(backend.asarray(rng.standard_normal(shape)), requires_grad=True)

# %% [markdown]
# ## 1. `Mul` (2 points)
# Keep what backward needs as attributes in `forward`. Use `sum_to(grad, shape)` for each input so that a
# broadcast input gets a gradient of its own shape.

# %% solution a01-mul
class Mul(Function):
    """y = a * b elementwise, with NumPy broadcasting. a, b: arrays of broadcastable shapes."""
    def forward(self, a, b):
        ### BEGIN SOLUTION
        self.a, self.b = a, b
        return a * b
        ### END SOLUTION

    def backward(self, g):
        """g: dL/dy with y's shape -> (dL/da with a's shape, dL/db with b's shape)."""
        ### BEGIN SOLUTION
        return sum_to(g * self.b, self.a.shape), sum_to(g * self.a, self.b.shape)
        ### END SOLUTION

# %% test a01-mul-test 2
a, b = randn(3, 4), randn(4)
check_close("Mul forward", Mul()(a, b), a * b)
check_grad("Mul, shapes (3, 4) * (3, 4)", lambda x, y: Mul()(x, y), [randn(3, 4), randn(3, 4)])
check_grad("Mul, shapes (3, 4) * (4,) (b is broadcast over rows)", lambda x, y: Mul()(x, y), [a, b])
### BEGIN HIDDEN TESTS
check_grad("Mul, shapes (2, 1, 4) * (3, 1) (both broadcast)", lambda x, y: Mul()(x, y), [randn(2, 1, 4), randn(3, 1)])
### END HIDDEN TESTS

# %% [markdown]
# ## 2. `MatMul` for 2-D matrices (2 points)
# $\bar A = G B^\top$ has the shape of $A$, $(M, K)$, and $\bar B = A^\top G$ the shape of $B$, $(K, N)$:
# checking shapes is the quickest way to get these right.

# %% solution a01-matmul
class MatMul(Function):
    """Y = A @ B for A (M, K), B (K, N) -> Y (M, N)."""
    def forward(self, A, B):
        ### BEGIN SOLUTION
        self.A, self.B = A, B
        return A @ B
        ### END SOLUTION

    def backward(self, G):
        """G: dL/dY (M, N) -> (dL/dA (M, K), dL/dB (K, N))."""
        ### BEGIN SOLUTION
        return G @ self.B.T, self.A.T @ G
        ### END SOLUTION

# %% test a01-matmul-test 2
A, B = randn(3, 5), randn(5, 2)
check_close("MatMul forward", MatMul()(A, B), A @ B)
check_grad("MatMul (3, 5) @ (5, 2)", lambda x, y: MatMul()(x, y), [A, B])
### BEGIN HIDDEN TESTS
check_grad("MatMul (1, 4) @ (4, 6)", lambda x, y: MatMul()(x, y), [randn(1, 4), randn(4, 6)])
### END HIDDEN TESTS

# %% [markdown]
# ## 3. `Sum` over one axis (2 points)
# Each input element appears in exactly one sum, with weight 1, so its gradient is the gradient of that sum.
# With `keepdims=False` the summed axis is gone from `g`: put it back (`np.expand_dims`) before broadcasting
# to the input's shape (`np.broadcast_to`, then a copy so later in-place updates are safe).

# %% solution a01-sum
class Sum(Function):
    """y = x.sum(axis, keepdims) for one integer axis."""
    def __init__(self, axis, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        ### BEGIN SOLUTION
        self.x_shape = x.shape
        return x.sum(axis=self.axis, keepdims=self.keepdims)
        ### END SOLUTION

    def backward(self, g):
        """g: dL/dy -> dL/dx with x's shape."""
        ### BEGIN SOLUTION
        if not self.keepdims:
            g = np.expand_dims(g, self.axis)
        return np.broadcast_to(g, self.x_shape).copy()
        ### END SOLUTION

# %% test a01-sum-test 2
x = randn(3, 4, 2)
for axis in (0, 1, 2):
    check_close(f"Sum forward, axis={axis}", Sum(axis)(x), x.sum(axis=axis))
    check_grad(f"Sum over axis={axis}, keepdims=False", lambda t: Sum(axis)(t), [x])
check_grad("Sum over axis=1, keepdims=True", lambda t: Sum(1, keepdims=True)(t), [x])
### BEGIN HIDDEN TESTS
check_grad("Sum over axis=-1", lambda t: Sum(-1)(t), [randn(2, 5)])
check_grad("Sum then Mul (the pieces compose)", lambda t, u: Mul()(Sum(0, keepdims=True)(t), u),
           [randn(3, 4), randn(2, 1, 4)])
### END HIDDEN TESTS

# %% [markdown]
# ## What you learned
# A backward is the transpose of the forward's linear map: multiply by the other factor, transpose the
# matrix, broadcast the sum back. Broadcasting in the forward is a sum in the backward, done once by
# `sum_to`. Compare with `Mul`, `MatMul` and `Sum` in `minclip/autograd.py`, which also handle batched
# and 1-D matmuls.
