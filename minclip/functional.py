"""Neural-network operations, each a Function with a forward on raw arrays and a short backward.

Import as `import minclip.functional as F`. Shapes follow PyTorch: images are
(N, C, H, W), linear weights (out_features, in_features), conv weights
(C_out, C_in, kh, kw). Ops that were rewritten for speed keep a plain version
(`linear_simple`, `layer_norm_simple`, ...) written with Tensor ops just above them;
tests/test_plain_ops.py keeps the two equal. Every op here has a float64 gradient check
in tests/test_functional.py (a test asserts that `__all__` equals the tested list).
"""
import math

import numpy as np

from . import backend, parallel
from .autograd import Function, sum_to
from .backend import get_array_module

# softmax, cross-entropy and attention live in softmax.py; batch norm, convolution and pooling in conv.py
from .conv import (  # noqa: F401
    AvgPool2d,
    BatchNorm,
    Conv2d,
    adaptive_avg_pool2d,
    avg_pool2d,
    batch_norm,
    batch_norm_simple,
    conv2d,
    conv2d_simple,
)
from .softmax import (  # noqa: F401
    CrossEntropy,
    LogSoftmax,
    ScaledDotProductAttention,
    Softmax,
    causal_mask,
    cross_entropy,
    cross_entropy_simple,
    log_softmax,
    log_softmax_simple,
    scaled_dot_product_attention,
    scaled_dot_product_attention_simple,
    softmax,
    softmax_simple,
)

__all__ = [
    "linear", "relu", "gelu", "quick_gelu", "sigmoid", "softmax", "log_softmax", "cross_entropy",
    "layer_norm", "batch_norm", "conv2d", "avg_pool2d", "adaptive_avg_pool2d", "embedding",
    "l2_normalize", "dropout", "scaled_dot_product_attention",
    # the plain versions of the fast ops above
    "linear_simple", "quick_gelu_simple", "softmax_simple", "log_softmax_simple", "cross_entropy_simple",
    "layer_norm_simple", "batch_norm_simple", "conv2d_simple", "scaled_dot_product_attention_simple",
]


# ----------------------------------------------------------------------------- linear
def linear_simple(x, weight, bias=None):
    """y = x weight^T + bias, from Tensor ops. x (..., in), weight (out, in), bias (out,) -> (..., out)."""
    y = x @ weight.T
    return y if bias is None else y + bias


class Linear(Function):
    """linear_simple as one Function: the leading axes of x are flattened so that forward and both
    gradients are single 2-D GEMMs (a stacked (N, L, in) @ (in, out) would loop over N), each shared
    between the threads by parallel.matmul, and the bias is added in place instead of into a second
    output-sized array."""
    def forward(self, x, W, b=None):
        if x.shape[-1] != W.shape[1]:
            raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape {W.shape} "
                             f"(in_features {W.shape[1]})")
        self.x2 = x.reshape(-1, x.shape[-1])               # (N*, in): a view, or one copy kept for gW
        self.x_shape, self.W, self.has_b = x.shape, W, b is not None
        y = parallel.matmul(self.x2, W.T).reshape(x.shape[:-1] + (W.shape[0],))
        if b is not None:
            y += b
        return y

    def backward(self, g):
        g2 = g.reshape(-1, g.shape[-1])                     # (N*, out)
        gx = parallel.matmul(g2, self.W).reshape(self.x_shape)  # (..., in)
        gW = parallel.matmul(g2.T, self.x2)                 # (out, in)
        return (gx, gW, g2.sum(0)) if self.has_b else (gx, gW)


def linear(x, weight, bias=None):
    """y = x @ weight.T + bias.  x: (..., in), weight: (out, in), bias: (out,) -> (..., out)."""
    return Linear()(x, weight) if bias is None else Linear()(x, weight, bias)


# ----------------------------------------------------------------------------- activations
class ReLU(Function):
    def forward(self, x):
        self.y = get_array_module(x).maximum(x, 0)
        return self.y

    def backward(self, g):
        # a multiply by the 0/1 mask: where(mask, g, 0) branches per element, slower on CPU
        return g * (self.y > 0)


class GELU(Function):
    """Exact GELU x * Phi(x) (erf form), or the tanh approximation."""
    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        if self.approximate == "tanh":
            self.t = xp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))
            return 0.5 * x * (1 + self.t)
        self.cdf = 0.5 * (1 + backend.erf(x / math.sqrt(2)))
        return x * self.cdf

    def backward(self, g):
        x = self.x
        if self.approximate == "tanh":
            dt = (1 - self.t ** 2) * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x ** 2)
            return g * (0.5 * (1 + self.t) + 0.5 * x * dt)
        pdf = get_array_module(x).exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return g * (self.cdf + x * pdf)


def _sigmoid(x):
    # 0.5 * (1 + tanh(x / 2)) equals 1 / (1 + exp(-x)) but never overflows
    return 0.5 * (1 + get_array_module(x).tanh(0.5 * x))


class Sigmoid(Function):
    def forward(self, x):
        self.y = _sigmoid(x)
        return self.y

    def backward(self, g):
        return g * self.y * (1 - self.y)


def quick_gelu_simple(x):
    """x * sigmoid(1.702 x), from Tensor ops: the GELU approximation OpenAI's CLIP models were trained with.
    sigmoid(z) is written (1 + tanh(z / 2)) / 2, which equals 1 / (1 + exp(-z)) but never overflows."""
    return x * (0.5 * (1 + (0.851 * x).tanh()))


class QuickGELU(Function):
    """quick_gelu_simple as one Function, written with in-place updates on one saved array s = sigmoid(1.702 x):
    it runs on the MLP's 4x-wide activations, the largest arrays of a step, where every temporary
    costs a full pass over memory; each pass runs over row blocks, one per thread (parallel.py).
    The sigmoid is 1 / (1 + exp(-1.702 x)), exp being cheaper than tanh; where exp overflows to inf
    the quotient is the right limit, 0, so that warning is silenced."""
    def forward(self, x):
        xp = get_array_module(x)
        shape, x = x.shape, xp.ascontiguousarray(x)              # at least 1-d: blocks slice axis 0
        s, y = xp.empty(x.shape, x.dtype), xp.empty(x.shape, x.dtype)

        def rows(a, b):
            xb, sb = x[a:b], s[a:b]
            xp.multiply(xb, -1.702, out=sb)
            with np.errstate(over="ignore"):
                xp.exp(sb, out=sb)
            sb += 1
            xp.reciprocal(sb, out=sb)                          # sigmoid(1.702 x), in place
            xp.multiply(xb, sb, out=y[a:b])
        parallel.for_rows(rows, len(x), x)
        self.x, self.s = x, s
        return y.reshape(shape)

    def backward(self, g):
        xp = get_array_module(g)
        shape, g = g.shape, xp.ascontiguousarray(g).reshape(self.x.shape)
        d = xp.empty(g.shape, g.dtype)

        def rows(a, b):                 # d/dx [x s] = s + 1.702 x s (1 - s)
            db, sb = d[a:b], self.s[a:b]
            xp.subtract(1, sb, out=db)
            db *= sb
            db *= self.x[a:b]
            db *= 1.702
            db += sb
            db *= g[a:b]
        parallel.for_rows(rows, len(g), g)
        return d.reshape(shape)


def relu(x): return ReLU()(x)
def gelu(x, approximate="none"): return GELU(approximate)(x)
def sigmoid(x): return Sigmoid()(x)
def quick_gelu(x): return QuickGELU()(x)


# ----------------------------------------------------------------------------- normalisation
def layer_norm_simple(x, weight, bias, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis (Ba et al. 2016), from Tensor ops.
    x (..., D), weight and bias (D,) -> (..., D); var is the biased variance, as PyTorch's."""
    xc = x - x.mean(-1, keepdims=True)
    var = (xc * xc).mean(-1, keepdims=True)
    return xc / (var + eps).sqrt() * weight + bias


class LayerNorm(Function):
    """layer_norm_simple as one Function, computed in at least float32 even for fp16 input.
    Forward centres, normalises, scales and shifts each block of rows in one go (a block per thread,
    parallel.py), its row means a matrix-vector product (BLAS) and its variances einsum's sum of
    squares (no product array).
    Backward is the closed form gx = rstd (g w - mean(g w) - xhat mean(g w xhat)), its steps in place
    on one array per block, and its row means against w matrix-vector products."""
    def __init__(self, eps=1e-5):
        self.eps = eps

    def forward(self, x, w, b):
        xp = get_array_module(x)
        self.x_dtype = x.dtype
        shape, d = x.shape, x.shape[-1]
        x = xp.ascontiguousarray(x, dtype=xp.promote_types(x.dtype, np.float32)).reshape(-1, d)  # (rows, D)
        mean = x @ xp.full(d, 1 / d, x.dtype)                         # row means as a matrix-vector product
        xhat = xp.empty(x.shape, x.dtype)
        rstd = xp.empty(x.shape[:-1] + (1,), x.dtype)
        y = xp.empty(x.shape, x.dtype)

        def rows(a, c):
            xh, r = xhat[a:c], rstd[a:c]
            xp.subtract(x[a:c], mean[a:c, None], out=xh)                # centred, becomes xhat in place
            r[:, 0] = xp.einsum("nd,nd->n", xh, xh)                    # sums of squares, no product array
            r *= 1 / d
            r += self.eps
            xp.sqrt(r, out=r)
            xp.reciprocal(r, out=r)
            xh *= r
            xp.multiply(xh, w, out=y[a:c])
            y[a:c] += b
        parallel.for_rows(rows, len(x), x)
        self.xhat, self.rstd, self.w = xhat, rstd, w
        return y.reshape(shape).astype(self.x_dtype, copy=False)

    def backward(self, g):
        xp = get_array_module(g)
        shape = g.shape
        g = xp.ascontiguousarray(g, dtype=self.xhat.dtype).reshape(self.xhat.shape)
        d = g.shape[-1]
        gw_mean = (g @ self.w)[..., None] / d                           # mean of g*w over the row
        t = xp.empty(g.shape, g.dtype)
        parallel.for_rows(lambda a, c: xp.multiply(g[a:c], self.xhat[a:c], out=t[a:c]), len(g), g)
        proj = (t @ self.w)[..., None] / d                              # mean of g*w*xhat over the row
        gw = sum_to(t, self.w.shape)
        gb = sum_to(g, self.w.shape)
        gx = xp.empty(g.shape, g.dtype)

        def rows(a, c):                                                 # gx = rstd (g w - mean - xhat proj)
            gxb, tb = gx[a:c], t[a:c]
            xp.multiply(g[a:c], self.w, out=gxb)
            gxb -= gw_mean[a:c]
            xp.multiply(self.xhat[a:c], proj[a:c], out=tb)
            gxb -= tb
            gxb *= self.rstd[a:c]
        parallel.for_rows(rows, len(g), g)
        return gx.reshape(shape).astype(self.x_dtype, copy=False), gw, gb


def layer_norm(x, weight, bias, eps=1e-5):
    """x (..., D), weight and bias (D,) -> (..., D)."""
    return LayerNorm(eps)(x, weight, bias)


# ----------------------------------------------------------------------------- embedding, normalise, dropout
class Embedding(Function):
    def __init__(self, ids):
        self.ids = backend.unwrap(ids)

    def forward(self, W):
        ids = self.ids
        if ids.dtype.kind not in "iu":
            raise ValueError(f"embedding: ids must be integers, got {ids.dtype}")
        if isinstance(ids, np.ndarray):  # ids from the host (the tokenizer's): checked for free, then moved
            lo, hi = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
            if lo < 0 or hi >= W.shape[0]:  # the one range check of token ids (encode_text relies on it)
                raise ValueError(f"embedding: token ids must lie in [0, {W.shape[0]}); got max id {hi} (min {lo}) "
                                 f"but vocab_size is {W.shape[0]}")
            self.ids = ids = backend.asarray(ids, like=W)
        # ids already on a device are not checked: reading their range back would stall the GPU twice
        self.W_shape = W.shape
        return W[ids]

    def backward(self, g):
        gW = get_array_module(g).zeros(self.W_shape, g.dtype)
        backend.scatter_add(gW, self.ids.reshape(-1), g.reshape(-1, self.W_shape[1]))  # repeated ids add up
        return gW


def embedding(ids, weight):
    """ids: int array (...), weight (V, D) -> (..., D). ids get no gradient."""
    return Embedding(ids)(weight)


class L2Normalize(Function):
    """x / max(||x||, eps), as torch.nn.functional.normalize."""
    def __init__(self, axis=-1, eps=1e-12):
        self.axis, self.eps = axis, eps

    def forward(self, x):
        xp = get_array_module(x)
        self.norm = xp.sqrt((x * x).sum(self.axis, keepdims=True))
        self.denom = xp.maximum(self.norm, self.eps)
        self.y = x / self.denom
        return self.y

    def backward(self, g):
        gx = g / self.denom
        # where the norm is above eps it also depends on x: remove the radial component
        radial = (g * self.y).sum(self.axis, keepdims=True) * self.y / self.denom
        return gx - radial * (self.norm > self.eps)


def l2_normalize(x, axis=-1, eps=1e-12):
    """Unit-length rows along `axis` (safe at 0: divides by eps instead)."""
    return L2Normalize(axis, eps)(x)


class Dropout(Function):
    def __init__(self, p, rng):
        self.drop_prob, self.rng = p, rng

    def forward(self, x):
        keep = backend.rand(*x.shape, rng=self.rng, dtype=x.dtype, like=x) >= self.drop_prob
        self.mask = keep.astype(x.dtype) / (1 - self.drop_prob)  # scale now so evaluation needs no rescaling
        return x * self.mask

    def backward(self, g):
        return g * self.mask


def dropout(x, p=0.5, training=True, rng=None):
    """Zero each element with probability p and scale the rest by 1/(1-p); identity when not training."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    return Dropout(p, rng)(x)
