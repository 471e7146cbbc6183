"""Each fast op in minclip.functional equals its plain version (`linear_simple`, `conv2d_simple`, ...)
in value and in gradient: float64, random inputs, several shapes, masks for attention and strides and
padding for convolution. The plain versions are Tensor-op compositions whose backward autograd
derives, so this pins every hand-written backward to the chain rule as well as to gradcheck."""
import numpy as np
import pytest
from _helpers import close, data, host, ints, wrap

import minclip.functional as F
from minclip import backend


def agree(plain, fast, shapes, seed=0, rtol=1e-10, atol=1e-12):
    """plain(*xs) == fast(*xs), and the gradients of sum(y * w) for a random w, for every input."""
    arrays = [data(s, seed=seed + i) for i, s in enumerate(shapes)]
    results = []
    for fn in (plain, fast):
        xs = [wrap(a) for a in arrays]
        y = fn(*xs)
        w = backend.asarray(data(y.shape, seed=99))
        y.backward(w)
        results.append((host(y), [host(x.grad) for x in xs]))
    (y_plain, g_plain), (y_fast, g_fast) = results
    close(y_fast, y_plain, rtol, atol)
    for i, (gf, gp) in enumerate(zip(g_fast, g_plain)):
        assert gf.shape == gp.shape, f"input {i}: gradient shape {gf.shape} != {gp.shape}"
        close(gf, gp, rtol, atol)


@pytest.mark.parametrize("x_shape, out, bias", [((5, 4), 3, True), ((2, 3, 4), 6, True), ((4,), 2, False),
                                                ((2, 2, 3, 5), 4, False)])
def test_linear(x_shape, out, bias):
    shapes = [x_shape, (out, x_shape[-1])] + ([(out,)] if bias else [])
    agree(F.linear_simple, F.linear, shapes)


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 8)])
def test_quick_gelu(shape):
    agree(F.quick_gelu_simple, F.quick_gelu, [shape])


@pytest.mark.parametrize("shape, axis", [((4, 6), -1), ((4, 6), 0), ((2, 3, 5), 1), ((2, 3, 5), -1)])
def test_softmax_and_log_softmax(shape, axis):
    agree(lambda x: F.softmax_simple(x, axis), lambda x: F.softmax(x, axis), [shape])
    agree(lambda x: F.log_softmax_simple(x, axis), lambda x: F.log_softmax(x, axis), [shape])


@pytest.mark.parametrize("n, c", [(1, 2), (5, 4), (16, 10)])
def test_cross_entropy(n, c):
    labels = ints(c, (n,), seed=n)
    agree(lambda z: F.cross_entropy_simple(z, labels), lambda z: F.cross_entropy(z, labels), [(n, c)])


@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 8), (1, 1, 6)])
def test_layer_norm(shape):
    d = shape[-1]
    agree(F.layer_norm_simple, F.layer_norm, [shape, (d,), (d,)])
    agree(lambda x, w, b: F.layer_norm_simple(x, w, b, eps=0.5), lambda x, w, b: F.layer_norm(x, w, b, eps=0.5),
          [shape, (d,), (d,)], seed=3)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 5), (2, 5, 1, 3)])
def test_batch_norm_training(shape):
    c = shape[1]
    agree(F.batch_norm_simple,
          lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), [shape, (c,), (c,)], rtol=1e-9)


@pytest.mark.parametrize("n, c, h, w, o, kh, kw, stride, padding", [
    (2, 3, 5, 5, 4, 3, 3, 1, 1),    # the ResNet's 3x3, stride-1 input gradient as a flipped convolution
    (2, 2, 5, 5, 5, 3, 3, 1, 1),    # more output than input channels: col2im
    (1, 3, 7, 6, 2, 3, 3, 2, 1),    # stride 2 with padding
    (2, 3, 6, 6, 4, 3, 3, 1, 0),    # no padding
    (2, 4, 3, 5, 6, 1, 1, 1, 0),    # 1x1: the batched-matmul path
    (1, 3, 5, 5, 2, 1, 1, 2, 1),    # 1x1 with stride and padding
    (2, 3, 4, 6, 5, 2, 2, 2, 0),    # patchify, kernel == stride (ViT's conv1)
    (1, 2, 5, 4, 3, 2, 3, 1, 2),    # non-square kernel, padding 2
])
@pytest.mark.parametrize("bias", [False, True])
def test_conv2d(n, c, h, w, o, kh, kw, stride, padding, bias):
    shapes = [(n, c, h, w), (o, c, kh, kw)] + ([(o,)] if bias else [])
    agree(lambda x, wt, *b: F.conv2d_simple(x, wt, *b, stride=stride, padding=padding),
          lambda x, wt, *b: F.conv2d(x, wt, *b, stride=stride, padding=padding), shapes)


def _padding_mask(lq, lk):
    """An additive mask that hides a few keys from each query (never all of a row's)."""
    m = np.where(np.random.default_rng(5).random((lq, lk)) < 0.3, -np.inf, 0.0)
    m[:, 0] = 0
    return backend.asarray(m)


@pytest.mark.parametrize("mask", ["none", "causal", "padding", "per-head"])
@pytest.mark.parametrize("q_shape, k_shape, v_shape", [
    ((2, 2, 4, 8), (2, 2, 4, 8), (2, 2, 4, 3)),      # (batch, heads, L, d)
    ((3, 4, 5), (3, 4, 5), (3, 4, 5)),
    ((2, 4, 5), (4, 5), (4, 6)),                     # keys and values shared by a batch of queries
])
def test_attention(mask, q_shape, k_shape, v_shape):
    lq, lk = q_shape[-2], k_shape[-2]
    if mask == "causal":
        m = F.causal_mask(lq, np.float64)
    elif mask == "padding":
        m = _padding_mask(lq, lk)
    elif mask == "per-head":                        # a mask with batch axes of its own, broadcast up
        m = backend.asarray(data((1,) * (len(q_shape) - 2) + (lq, lk), seed=7))
    else:
        m = None
    agree(lambda q, k, v: F.scaled_dot_product_attention_simple(q, k, v, m),
          lambda q, k, v: F.scaled_dot_product_attention(q, k, v, m), [q_shape, k_shape, v_shape], rtol=1e-9)


def test_attention_mask_larger_than_scores():
    """A mask with more batch axes than q k^T makes the scores broadcast up, in both versions."""
    m = backend.asarray(data((3, 4, 4), seed=7))
    agree(lambda q, k, v: F.scaled_dot_product_attention_simple(q, k, v, m),
          lambda q, k, v: F.scaled_dot_product_attention(q, k, v, m), [(4, 2), (4, 2), (4, 3)], rtol=1e-9)
