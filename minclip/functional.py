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


def _channel_sum(x):
    """Sum of x (N, C, ...) over every axis but the channels -> (C,).
    A matrix-vector product with ones (BLAS) and a short sum over N: NumPy's own reduction over
    axes (0, 2, 3) is 2-20x slower, the more so the smaller H*W."""
    N, C = x.shape[:2]
    x3 = x.reshape(N, C, -1)                                   # (N, C, H*W)
    return (x3 @ _xp(x).ones(x3.shape[2], x.dtype)).sum(0)


def _channel_dot(a, b):
    """Per-channel sum of a * b for a, b (N, C, ...) -> (C,), without the product array."""
    N, C = a.shape[:2]
    return _xp(a).einsum("ncp,ncp->c", a.reshape(N, C, -1), b.reshape(N, C, -1))


class BatchNorm(Function):
    """Batch norm over all axes but 1 (channels). Updates running stats in place in training.

    Keeps the centred input xc = x - mean and rstd = 1 / sqrt(var + eps) for backward (xhat = xc * rstd),
    and folds weight and rstd into one per-channel scale, so forward and backward each make
    only a few passes over the activations."""
    def __init__(self, running_mean, running_var, training, momentum, eps):
        self.rm, self.rv = backend.unwrap(running_mean), backend.unwrap(running_var)
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, w, b):
        xp = _xp(x)
        self.shape = shape = (1, -1) + (1,) * (x.ndim - 2)  # broadcast per-channel vectors
        self.n = n = x.size // x.shape[1]                    # elements per channel
        if self.training:
            mu = _channel_sum(x) / n
            xc = x - mu.reshape(shape)
            var = _channel_dot(xc, xc) / n  # of the centred values: E[x^2] - mu^2 cancels badly in float32
            if self.rm is not None:  # PyTorch keeps the unbiased variance in the running stat
                self.rm *= 1 - self.momentum
                self.rm += self.momentum * mu
                self.rv *= 1 - self.momentum
                self.rv += self.momentum * var * n / max(n - 1, 1)
        else:
            mu, var = self.rm, self.rv
            xc = x - mu.reshape(shape)
        self.rstd = 1 / xp.sqrt(var + self.eps)
        self.scale = (w * self.rstd).reshape(shape)          # y = xhat * w + b = xc * scale + b
        self.xc = xc
        y = xc * self.scale
        y += b.reshape(shape)
        return y

    def backward(self, g):
        gb = _channel_sum(g)
        gw = _channel_dot(g, self.xc) * self.rstd            # sum of g * xhat
        if not self.training:  # statistics are constants
            return g * self.scale, gw, gb
        # gx = w rstd (g - mean(g) - xhat mean(g xhat)); gx is ours, so the steps run in place
        gx = self.xc * (gw * self.rstd / self.n).reshape(self.shape)   # xhat mean(g xhat)
        _xp(g).subtract(g, gx, out=gx)
        gx -= (gb / self.n).reshape(self.shape)
        gx *= self.scale
        return gx, gw, gb


def batch_norm(x, running_mean, running_var, weight, bias, training=False, momentum=0.1, eps=1e-5):
    """x (N, C, ...) -> same shape. running_mean/var: (C,) arrays, updated in place when training."""
    return BatchNorm(running_mean, running_var, training, momentum, eps)(x, weight, bias)


# ----------------------------------------------------------------------------- convolution and pooling
# A convolution is one matrix multiply, W (O, C*kh*kw) @ cols (C*kh*kw, N*Ho*Wo), where each column of
# `cols` holds one input window (im2col). Its rows are ordered (C, kh, kw) and its columns (N, Ho, Wo):
# copying the window view into that order moves whole image rows (runs of Wo numbers), and so does its
# adjoint, _col2im. The textbook order (N*Ho*Wo, C*kh*kw) gathers pieces of kw numbers and is ~3x slower.
def _windows(x, kh, kw, stride):
    """Strided view (C, kh, kw, N, Ho, Wo) of every kernel window of x (N, C, H, W); no copy.
    view[c, i, j, n, y, x] = x[n, c, stride * y + i, stride * x + j]."""
    xp = _xp(x)
    N, C, H, W = x.shape
    Ho, Wo = (H - kh) // stride + 1, (W - kw) // stride + 1
    sN, sC, sH, sW = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, (C, kh, kw, N, Ho, Wo), (sC, sH, sW, sN, sH * stride, sW * stride))


def _pad(x, p):
    return x if p == 0 else _xp(x).pad(x, ((0, 0), (0, 0), (p, p), (p, p)))


def _col2im(gcols, x_shape, stride, pad):
    """Adjoint of _windows: add window gradients (C, kh, kw, N, Ho, Wo) back onto the image (N, C, H, W).
    One loop step per kernel offset (kh * kw steps), never per pixel."""
    xp = _xp(gcols)
    N, C, H, W = x_shape
    _, kh, kw, _, Ho, Wo = gcols.shape
    gx = xp.zeros((C, N, H + 2 * pad, W + 2 * pad), gcols.dtype)     # channels first, as gcols
    for i in range(kh):
        for j in range(kw):
            gx[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride] += gcols[:, i, j]
    # one transposing copy at the end: a contiguous gradient keeps the ops before (BatchNorm, ReLU) fast
    return xp.ascontiguousarray(gx[:, :, pad:pad + H, pad:pad + W].transpose(1, 0, 2, 3))


def _im2col_conv(x, W, stride, padding):
    """x (N, C, H, W) and W (O, C, kh, kw) -> (y (N, O, Ho, Wo), cols (C*kh*kw, N*Ho*Wo))."""
    xp = _xp(x)
    O, C, kh, kw = W.shape
    N = x.shape[0]
    windows = _windows(_pad(x, padding), kh, kw, stride)                  # (C, kh, kw, N, Ho, Wo), a view
    Ho, Wo = windows.shape[4:]
    cols = xp.ascontiguousarray(windows).reshape(C * kh * kw, N * Ho * Wo)  # the one copy
    y = (W.reshape(O, C * kh * kw) @ cols).reshape(O, N, Ho, Wo)
    return xp.ascontiguousarray(y.transpose(1, 0, 2, 3)), cols   # y in (N, O, Ho, Wo) order


class Conv2d(Function):
    """Cross-correlation, as PyTorch's conv2d, by im2col and one matrix multiply.

    The column matrix is copied once in forward and kept for the weight gradient. A 1x1 convolution
    with stride 1 and no padding (most convolutions of a Bottleneck) needs no copy at all: x seen as
    (N, C, H*W) already is its column matrix, one per image, and a batched matmul does the rest.
    Patchify (ViT's conv1, kernel == stride) takes the general path: its windows do not overlap, so
    the column matrix is a reordered copy of x, no bigger."""
    def __init__(self, stride=1, padding=0):
        self.stride, self.padding = stride, padding

    def forward(self, x, W, b=None):
        if x.ndim != 4 or W.ndim != 4 or x.shape[1] != W.shape[1]:
            raise ValueError(f"conv2d: input of shape {x.shape} (N, C, H, W) does not match weight of shape "
                             f"{W.shape} (C_out, C_in, kh, kw)")
        O, C, kh, kw = W.shape
        s, p = self.stride, self.padding
        if x.shape[2] + 2 * p < kh or x.shape[3] + 2 * p < kw:
            raise ValueError(f"conv2d: input of shape {x.shape} with padding {p} is smaller than the kernel {W.shape}")
        self.x_shape, self.W, self.has_b = x.shape, W, b is not None
        self.pointwise = kh == kw == s == 1 and p == 0
        if self.pointwise:
            N, _, H, Wd = x.shape
            self.cols = x.reshape(N, C, H * Wd)                                # (N, C, H*W), a view
            y = (W.reshape(O, C) @ self.cols).reshape(N, O, H, Wd)            # batched over the N images
        else:
            y, self.cols = _im2col_conv(x, W, s, p)                           # cols (C*kh*kw, N*Ho*Wo)
        if b is not None:
            y += b[:, None, None]
        return y

    def backward(self, g):
        xp = _xp(g)
        O, C, kh, kw = self.W.shape
        N, _, Ho, Wo = g.shape
        s, p = self.stride, self.padding
        W2 = self.W.reshape(O, C * kh * kw)
        gx = None
        # the images need no gradient (PyTorch's ctx.needs_input_grad); inputs is None if called by hand
        needs_gx = self.inputs is None or self.inputs[0].requires_grad
        if self.pointwise:
            g3 = g.reshape(N, O, Ho * Wo)                                     # (N, O, H*W)
            gW = xp.tensordot(g3, self.cols, axes=((0, 2), (0, 2)))           # (O, C): sum over images, pixels
            if needs_gx:
                gx = (W2.T @ g3).reshape(self.x_shape)                        # (N, C, H, W)
        else:
            g2 = g.transpose(1, 0, 2, 3).reshape(O, N * Ho * Wo)              # (O, N*Ho*Wo), a copy
            gW = g2 @ self.cols.T                                             # (O, C*kh*kw)
            if needs_gx and s == 1 and kh == kw and p < kh and O <= C:
                # With stride 1 the input gradient is itself a convolution: of g, padded by k-1-p, with the
                # kernel flipped and its in/out channels swapped. When g has no more channels than x its
                # im2col is no bigger than gcols below, and one copy plus a GEMM beat kh*kw strided adds.
                gx, _ = _im2col_conv(g, self.W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), 1, kh - 1 - p)
            elif needs_gx:
                gcols = (W2.T @ g2).reshape(C, kh, kw, N, Ho, Wo)             # a gradient for every window
                gx = _col2im(gcols, self.x_shape, s, p)
        gW = gW.reshape(self.W.shape)
        return (gx, gW, _channel_sum(g)) if self.has_b else (gx, gW)


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """x (N, C_in, H, W), weight (C_out, C_in, kh, kw) -> (N, C_out, Ho, Wo)."""
    f = Conv2d(stride, padding)
    return f(x, weight) if bias is None else f(x, weight, bias)


class AvgPool2d(Function):
    """Average over kernel windows (zero padding counted, as PyTorch's default).

    Forward adds k*k strided slices of the image, one per kernel offset, and backward spreads the
    gradient back through the same slices. NumPy's mean over the short window axes of a
    (N, C, Ho, k, Wo, k) view would be ~10x slower."""
    def __init__(self, kernel_size, stride, padding):
        self.k, self.s, self.p = kernel_size, stride, padding

    def forward(self, x):
        self.x_shape = x.shape
        k, s = self.k, self.s
        x = _pad(x, self.p)
        N, C, H, W = x.shape
        Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
        y = _xp(x).zeros((N, C, Ho, Wo), x.dtype)
        for i in range(k):
            for j in range(k):
                y += x[:, :, i:i + s * Ho:s, j:j + s * Wo:s]  # every window's (i, j) element
        y *= 1 / (k * k)
        return y

    def backward(self, g):
        k, s, p = self.k, self.s, self.p
        N, C, H, W = self.x_shape
        Ho, Wo = g.shape[2:]
        g = g / (k * k)                                          # every window element gets an equal share
        # the common case, windows that tile the image (k == s): each pixel gets exactly one share, so the
        # slices are written into uninitialised memory instead of added onto zeros (2x faster)
        tiles = k == s and p == 0 and H % k == 0 and W % k == 0
        xp = _xp(g)
        gx = (xp.empty if tiles else xp.zeros)((N, C, H + 2 * p, W + 2 * p), g.dtype)
        for i in range(k):
            for j in range(k):
                if tiles:
                    gx[:, :, i:i + s * Ho:s, j:j + s * Wo:s] = g
                else:
                    gx[:, :, i:i + s * Ho:s, j:j + s * Wo:s] += g
        return gx[:, :, p:p + H, p:p + W]


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """x (N, C, H, W) -> (N, C, Ho, Wo); stride defaults to kernel_size."""
    if x.shape[2] + 2 * padding < kernel_size or x.shape[3] + 2 * padding < kernel_size:
        raise ValueError(f"avg_pool2d: input of shape {x.shape} is smaller than the kernel {kernel_size}")
    return AvgPool2d(kernel_size, stride or kernel_size, padding)(x)


def adaptive_avg_pool2d(x, output_size):
    """x (N, C, H, W) -> (N, C, output_size, output_size); output_size 1 is global average pooling.
    Only sizes that divide H and W (equal windows) are supported."""
    H, W = x.shape[2:]
    if H != W or H % output_size:
        raise ValueError(f"adaptive_avg_pool2d: input of shape {x.shape} cannot be split into "
                         f"{output_size}x{output_size} equal windows")
    return AvgPool2d(H // output_size, H // output_size, 0)(x)


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
        keep = backend.rand(*x.shape, rng=self.rng, dtype=x.dtype) >= self.p
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

