"""Neural-network operations, each a Function with a forward on raw arrays and a short backward.

Import as `import minclip.functional as F`. Shapes follow PyTorch: images are
(N, C, H, W), linear weights (out_features, in_features), conv weights
(C_out, C_in, kh, kw). Every op here has a float64 gradient check in
tests/test_functional.py (a test asserts that `__all__` equals the tested list).
"""
import math

import numpy as np

from . import backend
from .autograd import Function, sum_to

# batch norm, convolution and pooling live in conv.py (a fast im2col needs memory-layout care)
from .conv import (  # noqa: F401
    AvgPool2d,
    BatchNorm,
    Conv2d,
    _col2im,
    _im2col_conv,
    adaptive_avg_pool2d,
    avg_pool2d,
    batch_norm,
    conv2d,
)

__all__ = [
    "linear", "relu", "gelu", "quick_gelu", "sigmoid", "softmax", "log_softmax", "cross_entropy",
    "layer_norm", "batch_norm", "conv2d", "avg_pool2d", "adaptive_avg_pool2d", "embedding",
    "l2_normalize", "dropout", "scaled_dot_product_attention",
]


def _xp(x):
    return backend.get_array_module(x)




# ----------------------------------------------------------------------------- linear
class Linear(Function):
    def forward(self, x, W, b=None):
        if x.shape[-1] != W.shape[1]:
            raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape {W.shape} "
                             f"(in_features {W.shape[1]})")
        self.x, self.W, self.has_b = x, W, b is not None
        # one 2-D GEMM over all leading axes: NumPy's stacked (N, L, in) @ (in, out) is ~1.5x slower
        y = (x.reshape(-1, x.shape[-1]) @ W.T).reshape(x.shape[:-1] + (W.shape[0],))
        if b is not None:
            y += b  # in place: y is ours, and a second output-sized array costs a full pass
        return y

    def backward(self, g):
        g2 = g.reshape(-1, g.shape[-1])                     # (N*, out)
        gx = (g2 @ self.W).reshape(self.x.shape)            # (..., in)
        gW = g2.T @ self.x.reshape(-1, self.x.shape[-1])    # (out, in)
        return (gx, gW, g2.sum(0)) if self.has_b else (gx, gW)


def linear(x, weight, bias=None):
    """y = x @ weight.T + bias.  x: (..., in), weight: (out, in), bias: (out,) -> (..., out)."""
    return Linear()(x, weight) if bias is None else Linear()(x, weight, bias)


# ----------------------------------------------------------------------------- activations
class ReLU(Function):
    def forward(self, x):
        self.y = _xp(x).maximum(x, 0)
        return self.y

    def backward(self, g):
        # a multiply by the 0/1 mask: where(mask, g, 0) branches per element and is ~8x slower on CPU
        return g * (self.y > 0)


class GELU(Function):
    """Exact GELU x * Phi(x) (erf form), or the tanh approximation."""
    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        xp = _xp(x)
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
        pdf = _xp(x).exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return g * (self.cdf + x * pdf)


def _sigmoid(x):
    # 0.5 * (1 + tanh(x / 2)) equals 1 / (1 + exp(-x)) but never overflows
    return 0.5 * (1 + _xp(x).tanh(0.5 * x))


class Sigmoid(Function):
    def forward(self, x):
        self.y = _sigmoid(x)
        return self.y

    def backward(self, g):
        return g * self.y * (1 - self.y)


class QuickGELU(Function):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP models were trained with.
    Written with in-place updates: it runs on the MLP's 4x-wide activations, the largest arrays of a step."""
    def forward(self, x):
        s = _xp(x).multiply(x, 0.851, out=_xp(x).empty_like(x))  # sigmoid(1.702 x) = 0.5 (1 + tanh(0.851 x)), in place
        _xp(x).tanh(s, out=s)
        s += 1
        s *= 0.5
        self.x, self.s = x, s
        return x * s

    def backward(self, g):
        d = 1 - self.s                  # d/dx [x s] = s + 1.702 x s (1 - s)
        d *= self.s
        d *= self.x
        d *= 1.702
        d += self.s
        d *= g
        return d


def relu(x): return ReLU()(x)
def gelu(x, approximate="none"): return GELU(approximate)(x)
def sigmoid(x): return Sigmoid()(x)
def quick_gelu(x): return QuickGELU()(x)


# ----------------------------------------------------------------------------- softmax family
class Softmax(Function):
    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        e = _xp(x).exp(x - x.max(axis=self.axis, keepdims=True))  # shift for stability
        self.y = e / e.sum(axis=self.axis, keepdims=True)
        return self.y

    def backward(self, g):
        y = self.y
        return y * (g - (g * y).sum(axis=self.axis, keepdims=True))


def _log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - _xp(x).log(_xp(x).exp(x - m).sum(axis=axis, keepdims=True))


class LogSoftmax(Function):
    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        self.y = _log_softmax(x, self.axis)
        return self.y

    def backward(self, g):
        return g - _xp(g).exp(self.y) * g.sum(axis=self.axis, keepdims=True)


class CrossEntropy(Function):
    """Mean over the batch of -log softmax(logits)[label]; fused for a simple backward."""
    def __init__(self, labels):
        self.labels = backend.unwrap(labels)

    def forward(self, logits):
        labels = self.labels
        if logits.ndim != 2 or labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
            raise ValueError(f"cross_entropy: logits of shape {logits.shape} need labels of shape "
                             f"({logits.shape[0] if logits.ndim else '?'},), got {labels.shape}")
        if labels.dtype.kind not in "iu":
            raise ValueError(f"cross_entropy: labels must be integers, got {labels.dtype}")
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
            raise ValueError(f"cross_entropy: labels must lie in [0, {logits.shape[1]}), "
                             f"got min {int(labels.min())} max {int(labels.max())}")
        xp = _xp(logits)
        self.logp = _log_softmax(logits, 1)
        rows = xp.arange(len(labels))
        return -self.logp[rows, labels].mean()

    def backward(self, g):
        xp = _xp(g)
        n = len(self.labels)
        gx = xp.exp(self.logp)  # softmax - onehot
        gx[xp.arange(n), self.labels] -= 1
        return gx * (g / n)


def softmax(x, axis=-1): return Softmax(axis)(x)
def log_softmax(x, axis=-1): return LogSoftmax(axis)(x)


def cross_entropy(logits, labels):
    """logits (N, C) float, labels (N,) int -> scalar mean cross-entropy."""
    return CrossEntropy(labels)(logits)


# ----------------------------------------------------------------------------- normalisation
class LayerNorm(Function):
    """Normalise over the last axis; computed in at least float32 even for fp16 input.
    Row sums against the weight vector are matrix-vector products (BLAS, multi-threaded)."""
    def __init__(self, eps=1e-5):
        self.eps = eps

    def forward(self, x, w, b):
        xp = _xp(x)
        self.src = x.dtype
        x = x.astype(xp.promote_types(x.dtype, np.float32), copy=False)
        xhat = x - x.mean(-1, keepdims=True)                          # centred, becomes xhat in place
        var = (xhat * xhat).mean(-1, keepdims=True)
        self.rstd = 1 / xp.sqrt(var + self.eps)
        xhat *= self.rstd
        self.xhat, self.w = xhat, w
        y = xhat * w
        y += b
        return y.astype(self.src, copy=False)

    def backward(self, g):
        d = g.shape[-1]
        gxhat = g * self.w
        gxhat_mean = (g @ self.w)[..., None] / d                       # mean of g*w over the row
        t = g * self.xhat
        proj = (t @ self.w)[..., None] / d                              # mean of g*w*xhat over the row
        gw = sum_to(t, self.w.shape)
        gb = sum_to(g, self.w.shape)
        gxhat -= gxhat_mean                                             # gx = rstd (gxhat - mean - xhat proj)
        t = self.xhat * proj
        gxhat -= t
        gxhat *= self.rstd
        return gxhat.astype(self.src, copy=False), gw, gb


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
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= W.shape[0]):
            raise ValueError(f"embedding: ids must lie in [0, {W.shape[0]}) (the vocabulary size), "
                             f"got min {int(ids.min())} max {int(ids.max())}")
        self.W_shape = W.shape
        return W[ids]

    def backward(self, g):
        gW = _xp(g).zeros(self.W_shape, g.dtype)
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
        xp = _xp(x)
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
        self.p, self.rng = p, rng

    def forward(self, x):
        keep = backend.rand(*x.shape, rng=self.rng, dtype=x.dtype, like=x) >= self.p
        self.mask = keep.astype(x.dtype) / (1 - self.p)  # scale now so evaluation needs no rescaling
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


# ----------------------------------------------------------------------------- attention
class ScaledDotProductAttention(Function):
    """softmax(q k^T / sqrt(d) + mask) v, fused so backward reuses the attention weights."""
    def __init__(self, mask=None):
        self.mask = backend.unwrap(mask)

    def forward(self, q, k, v):
        if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
            raise ValueError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} need q/k to share the last "
                             "dim and k/v the second-to-last")
        xp = _xp(q)
        self.scale = 1 / math.sqrt(q.shape[-1])
        s = (q @ k.swapaxes(-1, -2)) * self.scale                 # (..., Lq, Lk)
        if self.mask is not None:
            s = s + self.mask                                      # e.g. -inf above the diagonal (causal)
        e = xp.exp(s - s.max(-1, keepdims=True))
        self.p = e / e.sum(-1, keepdims=True)
        self.q, self.k, self.v = q, k, v
        return self.p @ v                                          # (..., Lq, dv)

    def backward(self, g):
        p, q, k, v = self.p, self.q, self.k, self.v
        gv = sum_to(p.swapaxes(-1, -2) @ g, v.shape)
        gp = g @ v.swapaxes(-1, -2)
        gs = p * (gp - (gp * p).sum(-1, keepdims=True)) * self.scale
        return sum_to(gs @ k, q.shape), sum_to(gs.swapaxes(-1, -2) @ q, k.shape), gv


def scaled_dot_product_attention(q, k, v, mask=None):
    """q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv), additive mask broadcastable to (..., Lq, Lk)."""
    return ScaledDotProductAttention(mask)(q, k, v)


def causal_mask(n, dtype=np.float32):
    """(n, n) additive mask: 0 on and below the diagonal, -inf above (the text encoder's)."""
    xp = backend.xp
    return xp.triu(xp.full((n, n), -np.inf, dtype=dtype), 1)

