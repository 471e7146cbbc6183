"""Image operations: batch norm, convolution and pooling, on (N, C, H, W) arrays.

Part of minclip.functional (which re-exports everything here: use `F.conv2d`, `F.batch_norm`, ...);
kept in a file of its own because a fast convolution on NumPy needs care with memory layout
(im2col and its adjoint) that the other ops do not. `conv2d_simple` and `batch_norm_simple` are the
plain versions, written with Tensor ops, that the fast Functions are tested against.
"""

from . import backend, parallel
from .autograd import Function, Tensor, concat, stack
from .backend import get_array_module


def _channel_sum(x):
    """Sum of x (N, C, ...) over every axis but the channels -> (C,).
    A matrix-vector product with ones (BLAS) and a short sum over N: NumPy's own reduction over
    axes (0, 2, 3) walks the array in short pieces."""
    N, C = x.shape[:2]
    x3 = x.reshape(N, C, -1)                                   # (N, C, H*W)
    return (x3 @ get_array_module(x).ones(x3.shape[2], x.dtype)).sum(0)


def _channel_dot(a, b):
    """Per-channel sum of a * b for a, b (N, C, ...) -> (C,), without the product array."""
    N, C = a.shape[:2]
    return get_array_module(a).einsum("ncp,ncp->c", a.reshape(N, C, -1), b.reshape(N, C, -1))


def batch_norm_simple(x, weight, bias, eps=1e-5):
    """Batch norm with training-mode statistics (Ioffe & Szegedy 2015, Algorithm 1), from Tensor ops.

    x (N, C, ...) -> same shape: y = (x - mean) / sqrt(var + eps) * weight + bias, mean and biased var
    taken per channel over every axis but 1. No running statistics: see `batch_norm` for those."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)                   # per-channel vectors broadcast over N, H, W
    xc = x - x.mean(axes, keepdims=True)
    var = (xc * xc).mean(axes, keepdims=True)
    return xc / (var + eps).sqrt() * weight.reshape(shape) + bias.reshape(shape)


class BatchNorm(Function):
    """batch_norm_simple as one Function, with evaluation mode and running statistics (updated in place).

    Keeps the centred input xc = x - mean and rstd = 1 / sqrt(var + eps) for backward, folds weight
    and rstd into one per-channel scale, takes the per-channel sums as matrix-vector products, and
    runs backward's closed form in place, so forward and backward each make a few passes over the
    activations where autograd's chain would make a dozen."""
    def __init__(self, running_mean, running_var, training, momentum, eps):
        self.rm, self.rv = backend.unwrap(running_mean), backend.unwrap(running_var)
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, w, b):
        xp = get_array_module(x)
        self.shape = shape = (1, -1) + (1,) * (x.ndim - 2)  # broadcast per-channel vectors
        self.n = n = x.size // x.shape[1]                    # elements per channel
        xc = xp.empty(x.shape, x.dtype)
        if self.training:
            mu = (_channel_sum(x) / n).reshape(shape)
            parallel.for_rows(lambda a, c: xp.subtract(x[a:c], mu, out=xc[a:c]), len(x), x)
            var = _channel_dot(xc, xc) / n  # of the centred values: E[x^2] - mu^2 cancels badly in float32
            if self.rm is not None:  # PyTorch keeps the unbiased variance in the running stat
                self.rm *= 1 - self.momentum
                self.rm += self.momentum * mu.reshape(-1)
                self.rv *= 1 - self.momentum
                self.rv += self.momentum * var * n / max(n - 1, 1)
        else:
            var = self.rv
            parallel.for_rows(lambda a, c: xp.subtract(x[a:c], self.rm.reshape(shape), out=xc[a:c]), len(x), x)
        self.rstd = 1 / xp.sqrt(var + self.eps)
        self.scale = (w * self.rstd).reshape(shape)          # y = xhat * w + b = xc * scale + b
        self.xc = xc
        y = xp.empty(x.shape, x.dtype)

        def rows(a, c):
            xp.multiply(xc[a:c], self.scale, out=y[a:c])
            y[a:c] += b.reshape(shape)
        parallel.for_rows(rows, len(x), x)
        return y

    def backward(self, g):
        xp = get_array_module(g)
        gb = _channel_sum(g)
        gw = _channel_dot(g, self.xc) * self.rstd            # sum of g * xhat
        gx = xp.empty(g.shape, g.dtype)
        if not self.training:  # statistics are constants
            parallel.for_rows(lambda a, c: xp.multiply(g[a:c], self.scale, out=gx[a:c]), len(g), g)
            return gx, gw, gb
        # gx = w rstd (g - mean(g) - xhat mean(g xhat)), its steps in place on each block
        xhat_coef = (gw * self.rstd / self.n).reshape(self.shape)
        g_mean = (gb / self.n).reshape(self.shape)

        def rows(a, c):
            gxb = gx[a:c]
            xp.multiply(self.xc[a:c], xhat_coef, out=gxb)               # xhat mean(g xhat)
            xp.subtract(g[a:c], gxb, out=gxb)
            gxb -= g_mean
            gxb *= self.scale
        parallel.for_rows(rows, len(g), g)
        return gx, gw, gb


def batch_norm(x, running_mean, running_var, weight, bias, training=False, momentum=0.1, eps=1e-5):
    """x (N, C, ...) -> same shape. running_mean/var: (C,) arrays, updated in place when training."""
    return BatchNorm(running_mean, running_var, training, momentum, eps)(x, weight, bias)


# ----------------------------------------------------------------------------- convolution and pooling
def _pad_simple(x, p):
    """Tensor x (N, C, H, W) with p zeros on each side of H and W, by concatenation."""
    if p == 0:
        return x
    xp = get_array_module(x)
    N, C, H, W = x.shape
    rows = Tensor(xp.zeros((N, C, p, W), x.dtype))
    x = concat([rows, x, rows], axis=2)
    cols = Tensor(xp.zeros((N, C, H + 2 * p, p), x.dtype))
    return concat([cols, x, cols], axis=3)


def conv2d_simple(x, weight, bias=None, stride=1, padding=0):
    """Cross-correlation by textbook im2col, from Tensor ops (autograd derives the backward).

    y[n, o, i, j] = b[o] + sum_{c, u, v} W[o, c, u, v] x[n, c, s i + u, s j + v]  (x zero-padded).
    Every window becomes one row of cols (N*Ho*Wo, C*kh*kw), and the whole convolution is one matrix
    product cols @ W^T, W seen as (O, C*kh*kw). x (N, C, H, W), weight (O, C, kh, kw) -> (N, O, Ho, Wo)."""
    O, C, kh, kw = weight.shape
    x = _pad_simple(x, padding)
    N, _, H, W = x.shape
    Ho, Wo = (H - kh) // stride + 1, (W - kw) // stride + 1
    # the (u, v) element of every window: x[:, :, u + s*i, v + s*j] for all i, j -> (N, C, Ho, Wo)
    pieces = [x[:, :, u:u + stride * Ho:stride, v:v + stride * Wo:stride] for u in range(kh) for v in range(kw)]
    cols = stack(pieces, axis=2)                                  # (N, C, kh*kw, Ho, Wo)
    cols = cols.transpose(0, 3, 4, 1, 2).reshape(N * Ho * Wo, C * kh * kw)
    y = cols @ weight.reshape(O, C * kh * kw).T                    # (N*Ho*Wo, O)
    if bias is not None:
        y = y + bias
    return y.reshape(N, Ho, Wo, O).transpose(0, 3, 1, 2)         # (N, O, Ho, Wo)


# The fast convolution below is the same matrix product, in one of two memory orders, whichever
# makes copying the window view into cols move the longer runs of adjacent numbers:
# - channels first, W (O, C*kh*kw) @ cols (C*kh*kw, N*Ho*Wo): rows (C, kh, kw), columns (N, Ho, Wo);
#   the copy moves whole image rows (runs of Wo numbers), and so does its adjoint, _col2im.
# - channels last, cols (N*Ho*Wo, kh*kw*C) @ W^T: the copy moves runs of C channels, the better
#   choice deep in a ResNet, where images are 8x8 or 4x4 and channels number in the hundreds.
# The textbook order above gathers pieces of kw numbers.
def _windows(x, kh, kw, stride):
    """Strided view (C, kh, kw, N, Ho, Wo) of every kernel window of x (N, C, H, W); no copy.
    view[c, i, j, n, y, x] = x[n, c, stride * y + i, stride * x + j]."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    Ho, Wo = (H - kh) // stride + 1, (W - kw) // stride + 1
    sN, sC, sH, sW = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, (C, kh, kw, N, Ho, Wo), (sC, sH, sW, sN, sH * stride, sW * stride))


def _windows_channels_last(x, kh, kw, stride, p):
    """Strided view (N, Ho, Wo, kh, kw, C) of every kernel window of x (N, C, H, W), zero-padded by p,
    over one channels-last copy of x (the transpose and the padding in a single copy)."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    xl = xp.zeros((N, H + 2 * p, W + 2 * p, C), x.dtype)
    xl[:, p:p + H, p:p + W] = x.transpose(0, 2, 3, 1)
    Ho, Wo = (H + 2 * p - kh) // stride + 1, (W + 2 * p - kw) // stride + 1
    sN, sH, sW, sC = xl.strides
    return xp.lib.stride_tricks.as_strided(
        xl, (N, Ho, Wo, kh, kw, C), (sN, sH * stride, sW * stride, sH, sW, sC))


def _pad(x, p):
    """x (N, C, H, W) with p zeros on each side of H and W (zeros plus one copy: np.pad is general and slow)."""
    if p == 0:
        return x
    N, C, H, W = x.shape
    out = get_array_module(x).zeros((N, C, H + 2 * p, W + 2 * p), x.dtype)
    out[:, :, p:p + H, p:p + W] = x
    return out


def _col2im(gcols, x_shape, stride, pad):
    """Adjoint of _windows: add window gradients (C, kh, kw, N, Ho, Wo) back onto the image (N, C, H, W).
    One loop step per kernel offset (kh * kw steps), never per pixel."""
    xp = get_array_module(gcols)
    N, C, H, W = x_shape
    _, kh, kw, _, Ho, Wo = gcols.shape
    gx = xp.zeros((C, N, H + 2 * pad, W + 2 * pad), gcols.dtype)     # channels first, as gcols
    for i in range(kh):
        for j in range(kw):
            gx[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride] += gcols[:, i, j]
    # one transposing copy at the end: a contiguous gradient keeps the ops before (BatchNorm, ReLU) fast
    return xp.ascontiguousarray(gx[:, :, pad:pad + H, pad:pad + W].transpose(1, 0, 2, 3))


def _channels_last(x_shape):
    """Whether _im2col_conv gathers an (N, C, H, W) input channels last: when channels outnumber an image row."""
    return x_shape[1] > x_shape[3]


def _im2col_conv(x, W, stride, padding):
    """x (N, C, H, W) and W (O, C, kh, kw) -> (y (N, O, Ho, Wo), cols): cols (C*kh*kw, N*Ho*Wo), or
    (N*Ho*Wo, kh*kw*C) when _channels_last(x.shape)."""
    xp = get_array_module(x)
    O, C, kh, kw = W.shape
    N = x.shape[0]
    if _channels_last(x.shape):
        windows = _windows_channels_last(x, kh, kw, stride, padding)          # (N, Ho, Wo, kh, kw, C), a view
        Ho, Wo = windows.shape[1:3]
        cols = xp.ascontiguousarray(windows).reshape(N * Ho * Wo, kh * kw * C)
        y = parallel.matmul(cols, W.transpose(0, 2, 3, 1).reshape(O, kh * kw * C).T).reshape(N, Ho, Wo, O)
        return xp.ascontiguousarray(y.transpose(0, 3, 1, 2)), cols
    windows = _windows(_pad(x, padding), kh, kw, stride)                  # (C, kh, kw, N, Ho, Wo), a view
    Ho, Wo = windows.shape[4:]
    cols = xp.ascontiguousarray(windows).reshape(C * kh * kw, N * Ho * Wo)  # the one copy
    y = parallel.matmul(W.reshape(O, C * kh * kw), cols).reshape(O, N, Ho, Wo)
    return xp.ascontiguousarray(y.transpose(1, 0, 2, 3)), cols   # y in (N, O, Ho, Wo) order


class Conv2d(Function):
    """conv2d_simple as one Function, with its own backward.

    The column matrix is copied once in forward, in whichever order above moves longer runs, and kept
    for the weight gradient; the input gradient is col2im (one strided add per kernel offset, not one
    slice gradient each), or for stride 1 a convolution of g with the flipped kernel. A 1x1 convolution
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
            y = parallel.matmul(W.reshape(O, C), self.cols).reshape(N, O, H, Wd)  # batched over the N images
        else:
            y, self.cols = _im2col_conv(x, W, s, p)
        if b is not None:
            y += b[:, None, None]
        return y

    def backward(self, g):
        O, C, kh, kw = self.W.shape
        N, _, Ho, Wo = g.shape
        s, p = self.stride, self.padding
        W2 = self.W.reshape(O, C * kh * kw)
        gx = None
        # the images need no gradient (PyTorch's ctx.needs_input_grad); inputs is None if called by hand
        needs_gx = self.inputs is None or self.inputs[0].requires_grad
        if self.pointwise:
            g3 = g.reshape(N, O, Ho * Wo)                                     # (N, O, H*W)
            # (O, C): one GEMM summing over images and pixels together (tensordot's way: per-image
            # products of depth H*W, as small as 4 late in a ResNet, would be memory-bound)
            gW = parallel.matmul(g3.transpose(1, 0, 2).reshape(O, -1), self.cols.transpose(0, 2, 1).reshape(-1, C))
            if needs_gx:
                gx = parallel.matmul(W2.T, g3).reshape(self.x_shape)          # (N, C, H, W)
        else:
            g2 = g.transpose(1, 0, 2, 3).reshape(O, N * Ho * Wo)              # (O, N*Ho*Wo), a copy
            if _channels_last(self.x_shape):                                  # cols (N*Ho*Wo, kh*kw*C)
                gW = parallel.matmul(g2, self.cols).reshape(O, kh, kw, C).transpose(0, 3, 1, 2)
            else:                                                             # cols (C*kh*kw, N*Ho*Wo)
                gW = parallel.matmul(g2, self.cols.T)
            if needs_gx and s == 1 and kh == kw and p < kh and O <= C:
                # With stride 1 the input gradient is itself a convolution: of g, padded by k-1-p, with the
                # kernel flipped and its in/out channels swapped. When g has no more channels than x its
                # im2col is no bigger than gcols below, and one copy plus a GEMM beat kh*kw strided adds.
                gx, _ = _im2col_conv(g, self.W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), 1, kh - 1 - p)
            elif needs_gx:
                gcols = parallel.matmul(W2.T, g2).reshape(C, kh, kw, N, Ho, Wo)  # a gradient for every window
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
    gradient back through the same slices: NumPy's mean over the short window axes of a
    (N, C, Ho, k, Wo, k) view would walk memory in pieces of k numbers."""
    def __init__(self, kernel_size, stride, padding):
        self.k, self.s, self.padding = kernel_size, stride, padding

    def forward(self, x):
        self.x_shape = x.shape
        k, s = self.k, self.s
        x = _pad(x, self.padding)
        N, C, H, W = x.shape
        Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
        y = get_array_module(x).zeros((N, C, Ho, Wo), x.dtype)
        for i in range(k):
            for j in range(k):
                y += x[:, :, i:i + s * Ho:s, j:j + s * Wo:s]  # every window's (i, j) element
        y *= 1 / (k * k)
        return y

    def backward(self, g):
        k, s, p = self.k, self.s, self.padding
        N, C, H, W = self.x_shape
        Ho, Wo = g.shape[2:]
        g = g / (k * k)                                          # every window element gets an equal share
        # the common case, windows that tile the image (k == s): each pixel gets exactly one share, so the
        # slices are written into uninitialised memory instead of added onto zeros
        tiles = k == s and p == 0 and H % k == 0 and W % k == 0
        xp = get_array_module(g)
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
