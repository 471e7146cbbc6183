"""Softmax and the ops built on it: log-softmax, cross-entropy, scaled dot-product attention.

Part of minclip.functional (which re-exports everything here: use `F.softmax`, `F.cross_entropy`, ...).
Each op comes twice: a plain version written with Tensor ops, whose backward autograd derives, and
below it the fast Function, whose docstring says what it changes. tests/test_plain_ops.py keeps
the two equal in value and gradient.
"""
import math

import numpy as np

from . import backend, parallel
from .autograd import Function, sum_to
from .backend import get_array_module


def _swap_last(t):
    """Tensor t (..., a, b) -> (..., b, a)."""
    return t.transpose(*range(t.ndim - 2), t.ndim - 1, t.ndim - 2)


# ----------------------------------------------------------------------------- softmax
def softmax_simple(x, axis=-1):
    """softmax(x)_i = exp(x_i) / sum_j exp(x_j) along `axis`, from Tensor ops.

    The row maximum m is subtracted first so that exp never overflows; softmax(x - m) = softmax(x)
    for any constant m, so m is taken from the raw data and needs no gradient."""
    e = (x - x.data.max(axis=axis, keepdims=True)).exp()
    return e / e.sum(axis, keepdims=True)


class Softmax(Function):
    """softmax_simple as one Function: backward uses y alone, dx = y * (g - sum(g * y)),
    instead of autograd's chain through exp, sum and division."""
    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        y = x - x.max(axis=self.axis, keepdims=True)          # shift for stability
        get_array_module(x).exp(y, out=y)
        y /= y.sum(axis=self.axis, keepdims=True)
        self.y = y
        return y

    def backward(self, g):
        y = self.y
        return y * (g - (g * y).sum(axis=self.axis, keepdims=True))


def softmax(x, axis=-1): return Softmax(axis)(x)


# ----------------------------------------------------------------------------- log-softmax and cross-entropy
def log_softmax_simple(x, axis=-1):
    """log softmax(x)_i = x_i - m - log sum_j exp(x_j - m), m the (constant) row maximum."""
    shifted = x - x.data.max(axis=axis, keepdims=True)
    return shifted - shifted.exp().sum(axis, keepdims=True).log()


def _log_softmax(x, axis):
    """The one log-softmax on raw arrays, shared by LogSoftmax and CrossEntropy."""
    y = x - x.max(axis=axis, keepdims=True)
    y -= get_array_module(x).log(get_array_module(x).exp(y).sum(axis=axis, keepdims=True))
    return y


class LogSoftmax(Function):
    """log_softmax_simple as one Function: backward is g - softmax * sum(g), from the saved output."""
    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        self.y = _log_softmax(x, self.axis)
        return self.y

    def backward(self, g):
        return g - get_array_module(g).exp(self.y) * g.sum(axis=self.axis, keepdims=True)


def log_softmax(x, axis=-1): return LogSoftmax(axis)(x)


def cross_entropy_simple(logits, labels):
    """-mean_n log softmax(logits_n)[labels_n]: logits (N, C) float, labels (N,) int -> scalar."""
    rows = get_array_module(backend.unwrap(labels)).arange(len(labels))
    return -log_softmax_simple(logits, 1)[rows, backend.unwrap(labels)].mean()


class CrossEntropy(Function):
    """cross_entropy_simple fused into one Function: the gradient is (softmax - onehot(labels)) / N,
    one array, where autograd would scatter into zeros and run back through log-softmax."""
    def __init__(self, labels):
        self.labels = backend.unwrap(labels)

    def forward(self, logits):
        labels = self.labels
        if logits.ndim != 2 or labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
            raise ValueError(f"cross_entropy: logits of shape {logits.shape} need labels of shape "
                             f"({logits.shape[0] if logits.ndim else '?'},), got {labels.shape}")
        if labels.dtype.kind not in "iu":
            raise ValueError(f"cross_entropy: labels must be integers, got {labels.dtype}")
        if isinstance(labels, np.ndarray) and labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
            raise ValueError(f"cross_entropy: labels must lie in [0, {logits.shape[1]}), "  # host labels: checked
                             f"got min {int(labels.min())} max {int(labels.max())}")   # for free; device ones not
        self.labels = labels = backend.asarray(labels, like=logits)  # backward indexes with them on the device
        self.logp = _log_softmax(logits, 1)
        return -self.logp[get_array_module(logits).arange(len(labels)), labels].mean()

    def backward(self, g):
        xp = get_array_module(g)
        n = len(self.labels)
        gx = xp.exp(self.logp)  # softmax - onehot
        gx[xp.arange(n), self.labels] -= 1
        gx *= g / n
        return gx


def cross_entropy(logits, labels):
    """logits (N, C) float, labels (N,) int -> scalar mean cross-entropy."""
    return CrossEntropy(labels)(logits)


# ----------------------------------------------------------------------------- attention
def scaled_dot_product_attention_simple(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d) + mask) v (Vaswani et al. 2017, eq. 1), from Tensor ops.

    q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv); mask additive, broadcastable to (..., Lq, Lk)
    (-inf where a query may not look). -> (..., Lq, dv)."""
    scores = q @ _swap_last(k) / math.sqrt(q.shape[-1])     # (..., Lq, Lk)
    if mask is not None:
        scores = scores + mask
    return softmax_simple(scores, -1) @ v


class ScaledDotProductAttention(Function):
    """scaled_dot_product_attention_simple as one Function. Forward folds the scale into q, adds the
    mask and runs the softmax in place on the score array (one (Lq, Lk) array instead of five), a block
    of its leading axis per thread (parallel.py); backward reuses the attention weights, as Softmax's
    backward does."""
    def __init__(self, mask=None):
        self.mask = backend.unwrap(mask)

    def forward(self, q, k, v):
        if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
            raise ValueError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} need q/k to share the last "
                             "dim and k/v the second-to-last")
        xp = get_array_module(q)
        self.scale = 1 / math.sqrt(q.shape[-1])
        s = parallel.matmul(q * self.scale, k.swapaxes(-1, -2))    # (..., Lq, Lk), a new array
        mask = self.mask
        if mask is not None and s.shape != np.broadcast_shapes(s.shape, mask.shape):
            s, mask = s + mask, None                               # a mask that broadcasts s up: added here
        split_mask = mask is not None and mask.ndim == s.ndim and mask.shape[0] != 1

        def rows(a, b):                                            # the softmax, in place on each block of axis 0
            sb = s[a:b]
            if mask is not None:
                sb += mask[a:b] if split_mask else mask            # e.g. -inf above the diagonal (causal)
            sb -= sb.max(-1, keepdims=True)
            xp.exp(sb, out=sb)
            sb /= xp.einsum("...k->...", sb)[..., None]            # row sums without a reduction's strided walk
        parallel.for_rows(rows, len(s), s)
        self.attn, self.q, self.k, self.v = s, q, k, v
        return parallel.matmul(s, v)                               # (..., Lq, dv)

    def backward(self, g):
        xp = get_array_module(g)
        attn, q, k, v = self.attn, self.q, self.k, self.v
        gv = sum_to(parallel.matmul(attn.swapaxes(-1, -2), g), v.shape)
        gs = parallel.matmul(g, v.swapaxes(-1, -2))                # d/d attn, then in place d/d scores

        def rows(a, b):
            gb, ab = gs[a:b], attn[a:b]
            gb -= xp.einsum("...k,...k->...", gb, ab)[..., None]   # row sums of gs * attn, in one pass
            gb *= ab
            gb *= self.scale
        parallel.for_rows(rows, len(gs), gs)
        return (sum_to(parallel.matmul(gs, k), q.shape), sum_to(parallel.matmul(gs.swapaxes(-1, -2), q), k.shape),
                gv)


def scaled_dot_product_attention(q, k, v, mask=None):
    """q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv), additive mask broadcastable to (..., Lq, Lk)."""
    return ScaledDotProductAttention(mask)(q, k, v)


def causal_mask(n, dtype=np.float32):
    """(n, n) additive mask: 0 on and below the diagonal, -inf above (the text encoder's)."""
    xp = backend.xp
    return xp.triu(xp.full((n, n), -np.inf, dtype=dtype), 1)
