"""The fast paths of the convolution ops in minclip.functional, each checked on its own (float64):
Conv2d's 1x1 batched matmul, its im2col path, and its two input gradients (the stride-1 "full"
convolution and col2im); AvgPool2d's tiling and general backward; BatchNorm's folded passes; ReLU.
Gradient checks, agreement between paths, and PyTorch parity (skipped without torch)."""
import numpy as np
import pytest
from torch_reference import require

from minclip import backend
from minclip import functional as F
from minclip.autograd import Tensor
from minclip.conv import _channels_last, _col2im, _im2col_conv
from minclip.gradcheck import gradcheck


@pytest.fixture(autouse=True)
def float64():
    backend.manual_seed(0)
    with backend.default_dtype(np.float64):
        yield


def rand(*shape, seed=0, grad=True):
    return Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=grad)


# (C_in, C_out, kernel (kh, kw), stride, padding, H, W) and which path the input gradient takes
CONV_CASES = {
    "1x1 (batched matmul)": (4, 6, (1, 1), 1, 0, 5, 4),
    "1x1 stride 2 (im2col)": (4, 3, (1, 1), 2, 0, 5, 5),
    "1x1 padded (im2col)": (3, 3, (1, 1), 1, 1, 3, 4),
    "3x3 s1 p1, C_out <= C_in (full conv)": (4, 3, (3, 3), 1, 1, 5, 6),
    "3x3 s1 p0, C_out <= C_in (full conv, pad 2)": (3, 3, (3, 3), 1, 0, 5, 5),
    "3x3 s1 p1, C_out > C_in (col2im)": (2, 5, (3, 3), 1, 1, 5, 5),
    "3x3 s2 p1 (col2im)": (3, 3, (3, 3), 2, 1, 7, 6),
    "2x3 kernel s1 p1 (col2im)": (3, 2, (2, 3), 1, 1, 4, 5),
    "patchify 2x2 s2": (3, 4, (2, 2), 2, 0, 4, 6),
    "3x3 s1 p1, C_in > W (channels last, full conv)": (6, 4, (3, 3), 1, 1, 3, 4),
    "3x3 s1 p1, C_in > W, C_out > C_in (channels last, col2im)": (5, 7, (3, 3), 1, 1, 4, 3),
    "3x3 s2 p1, C_in > W (channels last, col2im)": (6, 3, (3, 3), 2, 1, 5, 4),
}


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv2d_gradcheck(case, bias):
    C, O, (kh, kw), s, p, H, W = CONV_CASES[case]
    args = [rand(2, C, H, W), rand(O, C, kh, kw, seed=1)] + ([rand(O, seed=2)] if bias else [])
    gradcheck(lambda x, w, b=None: F.conv2d(x, w, b, s, p), args)


def test_conv2d_input_without_grad_gets_none():
    """The first convolution (on images) skips its input gradient; the weight gradient is unchanged."""
    x, w = rand(2, 3, 5, 5, grad=False), rand(4, 3, 3, 3, seed=1)
    F.conv2d(x, w, padding=1).sum().backward()
    assert x.grad is None
    x2 = rand(2, 3, 5, 5)
    w2 = Tensor(w.data.copy(), requires_grad=True)
    F.conv2d(x2, w2, padding=1).sum().backward()
    np.testing.assert_allclose(w.grad, w2.grad, rtol=1e-12)


def test_pointwise_equals_im2col():
    x, w = rand(3, 5, 4, 6).data, rand(7, 5, 1, 1, seed=1).data
    y_im2col, _ = _im2col_conv(x, w, 1, 0)
    np.testing.assert_allclose(F.conv2d(x, w).data, y_im2col, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("C,W", [(3, 6), (8, 4)])
def test_im2col_layouts_equal_conv2d_simple(C, W):
    """Both column orders (channels first for C <= W, channels last for C > W) give the plain convolution."""
    x, w = rand(2, C, 5, W).data, rand(4, C, 3, 3, seed=1).data
    assert _channels_last(x.shape) == (C > W)
    for s, p in [(1, 1), (2, 1), (1, 0)]:
        y, _ = _im2col_conv(x, w, s, p)
        np.testing.assert_allclose(y, F.conv2d_simple(Tensor(x), Tensor(w), stride=s, padding=p).data,
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("p", [0, 1, 2])
def test_full_conv_gradient_equals_col2im(p):
    """Stride 1: the input gradient as a convolution of g (flipped kernel) equals col2im of W^T g."""
    N, C, O, k, H = 2, 4, 3, 3, 6
    x, w = rand(N, C, H, H), rand(O, C, k, k, seed=1)
    y = F.conv2d(x, w, padding=p)
    g = np.random.default_rng(2).standard_normal(y.shape)
    y.backward(g)
    Ho = y.shape[2]
    gcols = (w.data.reshape(O, -1).T @ g.transpose(1, 0, 2, 3).reshape(O, -1)).reshape(C, k, k, N, Ho, Ho)
    np.testing.assert_allclose(x.grad, _col2im(gcols, x.shape, 1, p), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,s,p,H", [(2, 2, 0, 4), (2, 2, 0, 5), (3, 1, 1, 4), (3, 2, 1, 5), (1, 1, 0, 3)])
def test_avg_pool2d_paths(k, s, p, H):
    """(2, 2, 0, 4) and (1, 1, 0, 3) tile the image (the backward writes); the others add."""
    gradcheck(lambda x: F.avg_pool2d(x, k, s, p), [rand(2, 3, H, H)])


def test_batch_norm_float32_large_mean():
    """The variance is taken of centred values: a large common offset must not cancel it away."""
    x = (np.random.default_rng(0).standard_normal((8, 3, 4, 4)) * 0.1 + 1000).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y = F.batch_norm(x, rm, rv, np.ones(3, np.float32), np.zeros(3, np.float32), training=True).data
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean((0, 2, 3), keepdims=True)) / np.sqrt(x64.var((0, 2, 3), keepdims=True) + 1e-5)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, atol=2e-3)


# ----------------------------------------------------------------------------- parity with PyTorch
def torch_grads(fn, *arrays):
    """Values and gradients of sum(fn(*tensors) * w) in PyTorch, w a fixed random array."""
    torch = require()
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    w = torch.tensor(np.random.default_rng(9).standard_normal(tuple(y.shape)))
    (y * w).sum().backward()
    return y.detach().numpy(), [t.grad.numpy() for t in ts], w.numpy()


def ours_grads(fn, arrays, w):
    ts = [Tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    y.backward(w)
    return y.data, [t.grad for t in ts]


def assert_parity(ours_fn, torch_fn, *arrays):
    y_ref, g_ref, w = torch_grads(torch_fn, *arrays)
    y, gs = ours_grads(ours_fn, arrays, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    for g, r in zip(gs, g_ref):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_torch(case):
    C, O, (kh, kw), s, p, H, W = CONV_CASES[case]
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((3, C, H, W)), rng.standard_normal((O, C, kh, kw)), rng.standard_normal(O)
    torch = require()
    assert_parity(lambda x, w, b: F.conv2d(x, w, b, s, p),
                  lambda x, w, b: torch.nn.functional.conv2d(x, w, b, s, p), x, w, b)


@pytest.mark.parametrize("k,s,p,H", [(2, 2, 0, 4), (2, 2, 0, 5), (3, 1, 1, 4), (3, 2, 1, 5)])
def test_avg_pool2d_matches_torch(k, s, p, H):
    torch = require()
    x = np.random.default_rng(0).standard_normal((2, 3, H, H))
    assert_parity(lambda x: F.avg_pool2d(x, k, s, p), lambda x: torch.nn.functional.avg_pool2d(x, k, s, p), x)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_torch(training):
    torch = require()
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((4, 3, 5, 5)) * 2 + 1, rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    rm_t, rv_t = torch.tensor(rm), torch.tensor(rv)
    assert_parity(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=training),
                  lambda x, w, b: torch.nn.functional.batch_norm(x, rm_t, rv_t, w, b, training=training), x, w, b)
    np.testing.assert_allclose(rm, rm_t.numpy(), rtol=1e-12)   # running statistics updated alike
    np.testing.assert_allclose(rv, rv_t.numpy(), rtol=1e-12)


def test_relu_matches_torch():
    torch = require()
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    assert_parity(F.relu, torch.relu, x)
