# %% [markdown]
# # a05 · Convolution through im2col
#
# CLIP's ResNet image encoders and the ViT's patch embedding are 2-D convolutions. For an input
# $x \in \mathbb{R}^{N\times C\times H\times W}$ and weights $W \in \mathbb{R}^{F\times C\times k_h\times k_w}$,
# $$y_{n,f,i,j} = \sum_{c,u,v} W_{f,c,u,v}\, x_{n,c,\,s i+u,\,s j+v}$$
# with stride $s$ and output size $H_o = \lfloor (H-k_h)/s \rfloor + 1$ (no padding here).
# **im2col** copies every window into a column, so the whole convolution is one matrix product:
# `cols` of shape $(N, C k_h k_w, H_o W_o)$, and $y = W_{(F,\,C k_h k_w)}\;\mathrm{cols}$.
#
# Graded below: the forward of both parts (2 points) and their gradients (4 points).
#
# You write im2col as a `Function`. Its backward (col2im) sends each column entry back to the pixel it
# was copied from; where windows overlap, a pixel was copied several times and its gradients **add up**.

# %% setup
import numpy as np

from minclip import Function, Tensor, backend, gradcheck
from minclip import functional as F
from minclip.gradcheck import check_close, check_grad

rng = np.random.default_rng(0)


def randn(*shape):
    """A float64 Tensor of standard-normal numbers that requires grad (gradcheck needs float64)."""
    return Tensor(backend.asarray(rng.standard_normal(shape)), requires_grad=True)

# %% [markdown]
# ## 1. `Im2col`
# Row order inside a column must match `W.reshape(F, C * kh * kw)`: channel first, then kernel row $u$,
# then kernel column $v$. One way: loop over the $k_h k_w$ kernel offsets $(u, v)$ and take the strided
# slice `x[:, :, u:u + s*Ho:s, v:v + s*Wo:s]` of shape $(N, C, H_o, W_o)$ for each.

# %% solution a05-im2col
class Im2col(Function):
    """x (N, C, H, W) -> cols (N, C*kh*kw, Ho*Wo) for a kh x kw kernel with the given stride."""
    def __init__(self, kh, kw, stride=1):
        self.kh, self.kw, self.stride = kh, kw, stride

    def forward(self, x):
        ### BEGIN SOLUTION
        kh, kw, stride = self.kh, self.kw, self.stride
        N, C, H, W = x.shape
        Ho, Wo = (H - kh) // stride + 1, (W - kw) // stride + 1
        self.x_shape, self.out_hw = x.shape, (Ho, Wo)
        cols = np.empty((N, C, kh, kw, Ho, Wo), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i, j] = x[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride]
        return cols.reshape(N, C * kh * kw, Ho * Wo)
        ### END SOLUTION

    def backward(self, g):
        """g (N, C*kh*kw, Ho*Wo) -> dL/dx (N, C, H, W)."""
        ### BEGIN SOLUTION
        kh, kw, stride = self.kh, self.kw, self.stride
        N, C, H, W = self.x_shape
        Ho, Wo = self.out_hw
        g = g.reshape(N, C, kh, kw, Ho, Wo)
        gx = np.zeros(self.x_shape, dtype=g.dtype)
        for i in range(kh):
            for j in range(kw):
                gx[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride] += g[:, :, i, j]
        return gx
        ### END SOLUTION

# %% [markdown]
# ## 2. `conv2d` as one matrix product
# `weight.reshape(F, -1) @ cols` broadcasts over the batch: $(F, Ck_hk_w) @ (N, Ck_hk_w, H_oW_o)$.

# %% solution a05-conv2d
def conv2d(x, weight, stride=1):
    """x (N, C, H, W) Tensor, weight (F, C, kh, kw) Tensor -> (N, F, Ho, Wo), no bias, no padding."""
    ### BEGIN SOLUTION
    Fo, C, kh, kw = weight.shape
    N, _, H, W = x.shape
    Ho, Wo = (H - kh) // stride + 1, (W - kw) // stride + 1
    cols = Im2col(kh, kw, stride)(x)                       # (N, C*kh*kw, Ho*Wo)
    return (weight.reshape(Fo, C * kh * kw) @ cols).reshape(N, Fo, Ho, Wo)
    ### END SOLUTION

# %% test a05-forward 2
x, w = randn(2, 3, 5, 5), randn(4, 3, 3, 3)
cols = Im2col(3, 3)(x)
assert cols.shape == (2, 27, 9), f"Im2col(3, 3) of (2, 3, 5, 5) gives {cols.shape}, expected (2, 27, 9)"
check_close("conv2d, 3x3 kernel, stride 1", conv2d(x, w), F.conv2d(x, w))
check_close("conv2d, 3x3 kernel, stride 2", conv2d(x, w, stride=2), F.conv2d(x, w, stride=2))

# %% test a05-backward 4
check_grad("Im2col, 3x3 kernel, stride 1 (windows overlap)", lambda t: Im2col(3, 3)(t), [randn(1, 2, 4, 4)])
check_grad("conv2d (gradients of x and the weight)", lambda a, b: conv2d(a, b), [randn(1, 2, 4, 4), randn(3, 2, 2, 2)])
### BEGIN HIDDEN TESTS
check_grad("Im2col, 2x3 kernel, stride 2", lambda t: Im2col(2, 3, 2)(t), [randn(2, 1, 5, 6)])
x2, w2 = randn(1, 2, 7, 7), randn(2, 2, 3, 3)
check_close("conv2d, 7x7 input, stride 2", conv2d(x2, w2, 2), F.conv2d(x2, w2, stride=2))
### END HIDDEN TESTS

# %% [markdown]
# ## What you learned
# A convolution is a matrix product over copied windows, and the copy's backward is a scatter-add.
# minclip's `Conv2d` (`minclip/conv.py`) uses the same im2col with a layout chosen for speed, treats
# 1x1 convolutions as plain matmuls and computes the input gradient as a flipped convolution.
