"""Every op in minclip.functional: a forward check against an independent NumPy reference and a float64
gradient check (minclip.gradcheck), plus the op's errors and edge cases.

GRADCHECK_CASES maps each op name to its test; `test_every_op_has_a_gradcheck` asserts that the map
covers exactly `F.__all__`, so a new op without a gradient check fails the suite.
Sizes are tiny: an element-wise check costs two forward passes per input element.
"""
import math
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
from _helpers import close, data, host, ints, strided, tensor, transposed, wrap

import minclip.functional as F
from minclip import Tensor, backend, gradcheck


# ----------------------------------------------------------------------------- NumPy references
def np_conv2d(x, w, b, stride, pad):
    """Direct cross-correlation, one output pixel at a time."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    Ho, Wo = (H - kh) // stride + 1, (W - kw) // stride + 1
    out = np.zeros((N, O, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            patch = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return out if b is None else out + b[None, :, None, None]


def np_avg_pool2d(x, k, stride, pad):
    """Mean of each k x k window, zero padding included in the count (PyTorch's default)."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
    out = np.zeros(x.shape[:2] + (Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = x[:, :, i * stride:i * stride + k, j * stride:j * stride + k].mean((2, 3))
    return out


def np_softmax(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def np_gelu(x):
    return x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def np_sigmoid(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def np_norm(x, axes, w, b, eps):
    """(x - mean) / sqrt(var + eps) * w + b over `axes` (biased variance), w and b already broadcastable."""
    mu, var = x.mean(axes, keepdims=True), x.var(axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


@contextmanager
def no_warnings():
    """Turn warnings (NumPy's overflow, invalid value, divide by zero) into errors inside a block."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ----------------------------------------------------------------------------- one case per op
def case_linear():
    x, w, b = tensor((2, 3, 4)), tensor((5, 4), seed=1), tensor((5,), seed=2)
    close(F.linear(x, w, b), host(x) @ host(w).T + host(b))                    # 3-D input, with bias
    gradcheck(F.linear, [x, w, b])
    x2 = tensor((3, 4), seed=3)
    close(F.linear(x2, w), host(x2) @ host(w).T)                              # 2-D input, no bias
    gradcheck(F.linear, [x2, w])
    x1 = tensor((4,), seed=6)
    close(F.linear(x1, w, b), host(w) @ host(x1) + host(b))                   # 1-D input
    gradcheck(F.linear, [x1, w, b])
    gradcheck(F.linear, [strided((3, 4), seed=4), transposed((5, 4), seed=5)])  # non-contiguous
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(5, 3\)"):
        F.linear(x, tensor((5, 3)))


CONV_CASES = [  # (N, C, H, W), (O, kh, kw), stride, padding, bias
    ((2, 2, 5, 5), (3, 3, 3), 1, 1, True),
    ((1, 2, 5, 5), (2, 3, 3), 1, 0, False),
    ((2, 2, 7, 6), (3, 3, 3), 2, 1, False),
    ((1, 2, 6, 6), (2, 3, 3), 2, 0, True),
    ((1, 2, 5, 6), (2, 2, 3), 1, 0, True),      # non-square kernel
    ((1, 2, 4, 5), (2, 3, 1), 2, 1, False),     # non-square kernel, stride and padding
    ((2, 3, 4, 4), (2, 2, 2), 2, 0, True),      # patchify: kernel == stride (ViT's conv1)
    ((2, 3, 3, 3), (4, 1, 1), 1, 0, True),      # 1x1: the pointwise fast path
    ((1, 2, 3, 3), (2, 1, 1), 2, 1, False),     # 1x1 with stride and padding: the general path
]


def case_conv2d():
    for i, ((N, C, H, W), (O, kh, kw), s, p, bias) in enumerate(CONV_CASES):
        x, w = tensor((N, C, H, W), seed=i), tensor((O, C, kh, kw), seed=10 + i)
        b = tensor((O,), seed=20 + i) if bias else None
        ref = np_conv2d(host(x), host(w), None if b is None else host(b), s, p)
        close(F.conv2d(x, w, b, stride=s, padding=p), ref)
        args = [x, w] + ([b] if bias else [])
        gradcheck(lambda x, w, *b: F.conv2d(x, w, *b, stride=s, padding=p), args)
    x_nc = transposed((1, 2, 4, 3))                                               # non-contiguous input
    gradcheck(lambda x, w: F.conv2d(x, w, padding=1), [x_nc, tensor((2, 2, 3, 3))])
    gradcheck(lambda x, w: F.conv2d(x, w), [strided((1, 2, 3, 3), seed=1), tensor((2, 2, 1, 1))])
    with pytest.raises(ValueError, match=r"\(2, 3, 5, 5\).*\(4, 2, 3, 3\)"):     # channel mismatch
        F.conv2d(tensor((2, 3, 5, 5)), tensor((4, 2, 3, 3)))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        F.conv2d(tensor((1, 1, 2, 2)), tensor((1, 1, 3, 3)))


def case_avg_pool2d():
    for i, (shape, k, s, p) in enumerate([
            ((2, 2, 4, 4), 2, None, 0),   # fast path: windows tile the image
            ((1, 2, 6, 6), 3, 3, 0),      # fast path, k = 3
            ((1, 2, 5, 5), 3, 2, 1),      # general: overlapping windows with padding
            ((1, 1, 5, 4), 2, 1, 0),      # general: stride 1, non-square input
            ((1, 2, 5, 5), 2, 2, 0),      # k == stride but 5 % 2 != 0: the last row and column are dropped
            ((1, 1, 4, 4), 2, 2, 1)]):    # k == stride with padding
        x = tensor(shape, seed=i)
        close(F.avg_pool2d(x, k, s, p), np_avg_pool2d(host(x), k, s or k, p))
        gradcheck(lambda x: F.avg_pool2d(x, k, s, p), [x])
    gradcheck(lambda x: F.avg_pool2d(x, 2), [transposed((1, 2, 4, 4))])
    with pytest.raises(ValueError, match="smaller than the kernel"):
        F.avg_pool2d(tensor((1, 1, 2, 2)), 3)


def case_adaptive_avg_pool2d():
    x = tensor((2, 3, 4, 4))
    close(F.adaptive_avg_pool2d(x, 1), host(x).mean((2, 3), keepdims=True))
    close(F.adaptive_avg_pool2d(x, 2), host(x).reshape(2, 3, 2, 2, 2, 2).mean((3, 5)))
    gradcheck(lambda x: F.adaptive_avg_pool2d(x, 1), [x])
    gradcheck(lambda x: F.adaptive_avg_pool2d(x, 2), [x])
    for shape, size in [((1, 1, 5, 5), 2), ((1, 1, 4, 6), 2), ((1, 1, 2, 2), 3)]:
        with pytest.raises(ValueError, match=r"equal windows"):
            F.adaptive_avg_pool2d(tensor(shape), size)


def case_batch_norm():
    C, m, eps = 3, 0.3, 1e-5
    w, b = tensor((C,), seed=1), tensor((C,), seed=2)
    for shape in [(6, C), (3, C, 2, 2)]:
        x = tensor(shape)
        xn = host(x)
        axes = (0,) + tuple(range(2, xn.ndim))
        bshape = (1, C) + (1,) * (xn.ndim - 2)
        n = xn.size // C
        rm0, rv0 = data((C,), seed=3), data((C,), seed=4, positive=True)
        rm, rv = backend.asarray(rm0.copy()), backend.asarray(rv0.copy())
        # training: batch statistics, and the running ones move by `momentum`, the variance unbiased
        y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=m, eps=eps)
        close(y, np_norm(xn, axes, host(w).reshape(bshape), host(b).reshape(bshape), eps), rtol=1e-9)
        close(rm, (1 - m) * rm0 + m * xn.mean(axes))
        close(rv, (1 - m) * rv0 + m * xn.var(axes) * n / (n - 1))
        close(F.batch_norm(x, None, None, w, b, training=True, eps=eps), y)         # no running stats to keep
        gradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), [x, w, b])
        # evaluation: the running statistics are constants, and stay as they are
        rm1, rv1 = host(rm).copy(), host(rv).copy()
        y = F.batch_norm(x, rm, rv, w, b, training=False, eps=eps)
        ref = (xn - rm1.reshape(bshape)) / np.sqrt(rv1.reshape(bshape) + eps) * host(w).reshape(bshape)
        close(y, ref + host(b).reshape(bshape), rtol=1e-9)
        close(rm, rm1)
        close(rv, rv1)
        gradcheck(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=False), [x, w, b])
        close(rm, rm1)                                            # gradcheck's many calls too
    gradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), [transposed((4, C)), w, b])


def case_layer_norm():
    for shape in [(3, 5), (2, 2, 4)]:
        D = shape[-1]
        x, w, b = tensor(shape), tensor((D,), seed=1), tensor((D,), seed=2)
        close(F.layer_norm(x, w, b), np_norm(host(x), -1, host(w), host(b), 1e-5), rtol=1e-9)
        close(F.layer_norm(x, w, b, eps=0.1), np_norm(host(x), -1, host(w), host(b), 0.1), rtol=1e-9)
        gradcheck(F.layer_norm, [x, w, b])
    gradcheck(F.layer_norm, [transposed((4, 3)), tensor((3,), seed=1), tensor((3,), seed=2)])


def case_softmax():
    x = tensor((2, 3, 4))
    for axis in (-1, 0, 1, 2):
        y = F.softmax(x, axis)
        close(y, np_softmax(host(x), axis))
        close(y.sum(axis), np.ones(np.delete(x.shape, axis)))
        gradcheck(lambda x: F.softmax(x, axis), [x])
    gradcheck(lambda x: F.softmax(x, 0), [transposed((3, 4))])
    huge = wrap(np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 0.0]]))
    with no_warnings():
        y = F.softmax(huge)
        y.backward(backend.asarray(np.ones((2, 3))))
    close(y, [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    assert np.isfinite(host(huge.grad)).all()
    close(F.softmax(x + 1e4, -1), F.softmax(x, -1), rtol=1e-9)  # invariant to a shift


def case_log_softmax():
    x = tensor((2, 3, 4))
    for axis in (-1, 0, 1):
        close(F.log_softmax(x, axis), np.log(np_softmax(host(x), axis)))
        gradcheck(lambda x: F.log_softmax(x, axis), [x])
    gradcheck(lambda x: F.log_softmax(x, 1), [strided((3, 4))])
    huge = wrap(np.array([[1e4, 0.0, -1e4]]))
    with no_warnings():
        y = F.log_softmax(huge)
        y.backward(backend.asarray(np.ones((1, 3))))
    close(y, [[0.0, -1e4, -2e4]])
    assert np.isfinite(host(huge.grad)).all()


def case_cross_entropy():
    logits, labels = tensor((5, 4)), ints(4, (5,))
    ref = -np.log(np_softmax(host(logits), 1))[np.arange(5), host(labels)].mean()
    y = F.cross_entropy(logits, labels)
    assert y.shape == ()
    close(y, ref)
    label_t = Tensor(labels)                                     # integer labels as an input: they get no grad
    gradcheck(lambda z, t: F.cross_entropy(z, t), [logits, label_t])
    assert label_t.grad is None
    gradcheck(lambda z: F.cross_entropy(z, labels), [transposed((5, 4))])
    huge = wrap(np.array([[1e4, -1e4], [0.0, 1e4]]))
    with no_warnings():
        y = F.cross_entropy(huge, backend.asarray(np.array([1, 1])))
        y.backward()
    close(y, 1e4)                                                # (2e4 + 0) / 2
    assert np.isfinite(host(huge.grad)).all()
    with pytest.raises(ValueError, match=r"\(5, 4\).*\(3,\)"):  # shape mismatch names both shapes
        F.cross_entropy(logits, ints(4, (3,)))
    with pytest.raises(ValueError, match=r"\(5, 4\).*\(5, 1\)"):
        F.cross_entropy(logits, ints(4, (5, 1)))
    with pytest.raises(ValueError, match="integers"):
        F.cross_entropy(logits, backend.asarray(np.zeros(5)))
    for bad in ([0, 1, 2, 3, 4], [0, -1, 2, 3, 1]):              # out of range, both ends (host labels are
        with pytest.raises(ValueError, match=r"\[0, 4\)"):      # checked; device ones would cost a sync)
            F.cross_entropy(logits, np.array(bad))


def case_embedding():
    w = tensor((6, 3))
    ids = backend.asarray(np.array([[1, 4, 1], [0, 1, 5]]))      # repeated ids: gradients add up
    y = F.embedding(ids, w)
    assert y.shape == (2, 3, 3)
    close(y, host(w)[host(ids)])
    gradcheck(lambda w: F.embedding(ids, w), [w])
    ids_t = Tensor(ids)
    gradcheck(lambda i, w: F.embedding(i, w), [ids_t, w])
    assert ids_t.grad is None
    w.zero_grad()
    F.embedding(ids, w).sum().backward()
    close(w.grad, np.array([1.0, 3, 0, 0, 1, 1])[:, None] * np.ones(3))  # scatter-add over repeats
    gradcheck(lambda w: F.embedding(ids, w), [transposed((6, 3), seed=1)])
    for bad in ([6], [-1]):
        with pytest.raises(ValueError, match=r"\[0, 6\).*vocab_size is 6"):  # host ids, as the tokenizer's
            F.embedding(np.array(bad), w)
    with pytest.raises(ValueError, match="integers"):
        F.embedding(backend.asarray(np.array([1.0])), w)


def case_l2_normalize():
    x = tensor((4, 5))
    xn = host(x)
    close(F.l2_normalize(x), xn / np.linalg.norm(xn, axis=1, keepdims=True))
    close(F.l2_normalize(x, axis=0), xn / np.linalg.norm(xn, axis=0, keepdims=True))
    close((F.l2_normalize(x) ** 2).sum(-1), np.ones(4))
    gradcheck(F.l2_normalize, [x])
    gradcheck(lambda x: F.l2_normalize(x, axis=0), [x])
    gradcheck(F.l2_normalize, [transposed((3, 4))])
    z_np = data((3, 4))
    z_np[1] = 0                                                   # a zero row: eps-safe
    z = wrap(z_np)
    with no_warnings():
        y = F.l2_normalize(z)
        y.backward(backend.asarray(np.ones((3, 4))))
    assert np.isfinite(y.numpy()).all() and np.isfinite(host(z.grad)).all()
    close(y.numpy()[1], np.zeros(4))
    close(y.numpy()[[0, 2]], z_np[[0, 2]] / np.linalg.norm(z_np[[0, 2]], axis=1, keepdims=True))


def case_dropout():
    x = tensor((100, 200))
    assert F.dropout(x, 0.5, training=False) is x and F.dropout(x, 0.0) is x      # identity
    y = F.dropout(x, 0.25, rng=0).numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01                                           # expected keep rate
    close(y[kept], host(x)[kept] / 0.75)                                            # kept ones scaled by 1/(1-p)
    np.testing.assert_array_equal(F.dropout(x, 0.25, rng=0).numpy(), y)             # a seed fixes the mask
    assert not np.array_equal(F.dropout(x, 0.25, rng=1).numpy() != 0, kept)
    xs = tensor((3, 4), seed=1)
    gradcheck(lambda x: F.dropout(x, 0.3, rng=1), [xs])                             # same mask on every call
    xs.zero_grad()
    F.dropout(xs, 0.3, rng=1).sum().backward()
    mask = F.dropout(wrap(np.ones((3, 4)), requires_grad=False), 0.3, rng=1).numpy()
    close(xs.grad, mask)                                                            # grad = mask / (1 - p)
    assert F.dropout(wrap(np.ones(4, np.float32)), 0.5, rng=0).dtype == np.float32
    for p in (1.0, -0.1):
        with pytest.raises(ValueError, match="dropout"):
            F.dropout(x, p)


def case_scaled_dot_product_attention():
    def ref(q, k, v, mask=None):
        s = q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1])
        return np_softmax(s if mask is None else s + mask, -1) @ v

    q, k, v = tensor((2, 2, 3, 4)), tensor((2, 2, 3, 4), seed=1), tensor((2, 2, 3, 5), seed=2)  # batch, heads
    mask = F.causal_mask(3, np.float64)
    close(mask, np.triu(np.full((3, 3), -np.inf), 1))
    assert F.causal_mask(2).dtype == np.float32
    close(F.scaled_dot_product_attention(q, k, v), ref(host(q), host(k), host(v)), rtol=1e-9)
    close(F.scaled_dot_product_attention(q, k, v, mask), ref(host(q), host(k), host(v), host(mask)), rtol=1e-9)
    gradcheck(F.scaled_dot_product_attention, [q, k, v])
    gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask), [q, k, v])
    # causal: the first query sees only the first key, so its output is v's first row and nothing else
    out = F.scaled_dot_product_attention(q, k, v, mask)
    close(out.numpy()[..., 0, :], host(v)[..., 0, :], rtol=1e-12)
    v.zero_grad()
    out[..., 0, :].sum().backward()
    close(host(v.grad)[..., 1:, :], np.zeros((2, 2, 2, 5)))
    # no batch dims, Lq != Lk; and keys/values shared across a batch of queries (broadcast, then summed)
    gradcheck(F.scaled_dot_product_attention, [tensor((2, 3)), tensor((4, 3), seed=1), tensor((4, 2), seed=2)])
    q3, k2, v2 = tensor((2, 3, 4)), tensor((3, 4), seed=1), tensor((3, 2), seed=2)
    close(F.scaled_dot_product_attention(q3, k2, v2), ref(host(q3), host(k2), host(v2)), rtol=1e-9)
    gradcheck(F.scaled_dot_product_attention, [q3, k2, v2])
    gradcheck(F.scaled_dot_product_attention, [transposed((4, 3)), strided((3, 3), seed=1), tensor((3, 2))])
    with pytest.raises(ValueError, match="attention"):
        F.scaled_dot_product_attention(tensor((2, 3)), tensor((2, 4)), tensor((2, 4)))


def case_gelu():
    x = tensor((3, 5))
    xn = host(x)
    close(F.gelu(x), np_gelu(xn))
    close(F.gelu(x, "tanh"), 0.5 * xn * (1 + np.tanh(math.sqrt(2 / math.pi) * (xn + 0.044715 * xn ** 3))))
    close(F.gelu(x, "tanh"), np_gelu(xn), atol=1e-3, rtol=0)  # the approximation is close to the exact form
    gradcheck(F.gelu, [x])
    gradcheck(lambda x: F.gelu(x, approximate="tanh"), [x])
    gradcheck(F.gelu, [transposed((3, 4))])
    gradcheck(F.gelu, [tensor(())])                           # a 0-d input
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(x, "fast")


def case_quick_gelu():
    x = tensor((3, 5))
    close(F.quick_gelu(x), host(x) * np_sigmoid(1.702 * host(x)))
    gradcheck(F.quick_gelu, [x])
    gradcheck(F.quick_gelu, [transposed((3, 4))])
    gradcheck(F.quick_gelu, [tensor(())])
    assert F.quick_gelu(wrap(np.ones(3, np.float32))).dtype == np.float32


def case_sigmoid():
    x = tensor((3, 5), scale=3)
    close(F.sigmoid(x), np_sigmoid(host(x)))
    gradcheck(F.sigmoid, [x])
    ext = wrap(np.array([-1e4, -800.0, 0.0, 800.0, 1e4]))
    with no_warnings():                                        # no overflow in exp
        y = F.sigmoid(ext)
        y.backward(backend.asarray(np.ones(5)))
    close(y, [0.0, 0.0, 0.5, 1.0, 1.0])
    close(ext.grad, [0.0, 0.0, 0.25, 0.0, 0.0])
    y32 = F.sigmoid(wrap(np.array([-100.0, 100.0], np.float32)))
    assert y32.dtype == np.float32 and np.isfinite(y32.numpy()).all()


def case_relu():
    x = tensor((4, 5))
    close(F.relu(x), np.maximum(host(x), 0))
    gradcheck(F.relu, [x])
    gradcheck(F.relu, [strided((3, 4))])
    z = wrap(np.array([-1.0, 0.0, 2.0]))
    F.relu(z).sum().backward()
    close(z.grad, [0.0, 0.0, 1.0])  # the subgradient 0 at 0, as PyTorch


# ----------------------------------------------------------------------------- the plain versions
# Each plain op against the same NumPy reference as its fast twin, and its autograd-derived backward
# through gradcheck; tests/test_plain_ops.py checks plain against fast on more shapes.
def case_linear_simple():
    x, w, b = tensor((2, 3, 4)), tensor((5, 4), seed=1), tensor((5,), seed=2)
    close(F.linear_simple(x, w, b), host(x) @ host(w).T + host(b))
    gradcheck(F.linear_simple, [x, w, b])
    gradcheck(F.linear_simple, [tensor((4,), seed=3), w])                   # 1-D input, no bias


def case_quick_gelu_simple():
    x = tensor((3, 5), scale=3)
    close(F.quick_gelu_simple(x), host(x) * np_sigmoid(1.702 * host(x)))
    gradcheck(F.quick_gelu_simple, [x])
    with no_warnings():                                                     # tanh form: no overflow
        close(F.quick_gelu_simple(wrap(np.array([-1e4, 1e4]))), [0.0, 1e4])


def case_softmax_simple():
    x = tensor((2, 3, 4))
    for axis in (-1, 0, 1):
        close(F.softmax_simple(x, axis), np_softmax(host(x), axis))
        gradcheck(lambda x: F.softmax_simple(x, axis), [x])
    with no_warnings():
        close(F.softmax_simple(wrap(np.array([[1e4, 0.0, -1e4]]))), [[1.0, 0.0, 0.0]])


def case_log_softmax_simple():
    x = tensor((2, 3, 4))
    for axis in (-1, 0):
        close(F.log_softmax_simple(x, axis), np.log(np_softmax(host(x), axis)))
        gradcheck(lambda x: F.log_softmax_simple(x, axis), [x])
    with no_warnings():
        close(F.log_softmax_simple(wrap(np.array([[1e4, 0.0, -1e4]]))), [[0.0, -1e4, -2e4]])


def case_cross_entropy_simple():
    logits, labels = tensor((5, 4)), ints(4, (5,))
    ref = -np.log(np_softmax(host(logits), 1))[np.arange(5), host(labels)].mean()
    close(F.cross_entropy_simple(logits, labels), ref)
    gradcheck(lambda z: F.cross_entropy_simple(z, labels), [logits])
    label_t = Tensor(labels)
    gradcheck(lambda z, t: F.cross_entropy_simple(z, t), [logits, label_t])  # integer labels get no grad
    assert label_t.grad is None


def case_layer_norm_simple():
    x, w, b = tensor((2, 3, 4)), tensor((4,), seed=1), tensor((4,), seed=2)
    close(F.layer_norm_simple(x, w, b), np_norm(host(x), -1, host(w), host(b), 1e-5), rtol=1e-9)
    close(F.layer_norm_simple(x, w, b, eps=0.1), np_norm(host(x), -1, host(w), host(b), 0.1), rtol=1e-9)
    gradcheck(F.layer_norm_simple, [x, w, b])


def case_batch_norm_simple():
    w, b = tensor((3,), seed=1), tensor((3,), seed=2)
    for shape in [(6, 3), (3, 3, 2, 2)]:
        x = tensor(shape)
        axes, bshape = (0,) + tuple(range(2, len(shape))), (1, 3) + (1,) * (len(shape) - 2)
        ref = np_norm(host(x), axes, host(w).reshape(bshape), host(b).reshape(bshape), 1e-5)
        close(F.batch_norm_simple(x, w, b), ref, rtol=1e-9)
        gradcheck(F.batch_norm_simple, [x, w, b])


def case_conv2d_simple():
    for i, ((N, C, H, W), (O, kh, kw), s, p, bias) in enumerate(CONV_CASES):
        x, w = tensor((N, C, H, W), seed=i), tensor((O, C, kh, kw), seed=10 + i)
        b = tensor((O,), seed=20 + i) if bias else None
        close(F.conv2d_simple(x, w, b, s, p), np_conv2d(host(x), host(w), None if b is None else host(b), s, p))
        gradcheck(lambda x, w, *b: F.conv2d_simple(x, w, *b, stride=s, padding=p), [x, w] + ([b] if bias else []))


def case_scaled_dot_product_attention_simple():
    q, k, v = tensor((2, 3, 4)), tensor((2, 3, 4), seed=1), tensor((2, 3, 5), seed=2)
    mask = F.causal_mask(3, np.float64)
    s = host(q) @ host(k).swapaxes(-1, -2) / 2 + host(mask)                # sqrt(d) = 2
    close(F.scaled_dot_product_attention_simple(q, k, v, mask), np_softmax(s, -1) @ host(v), rtol=1e-9)
    gradcheck(lambda q, k, v: F.scaled_dot_product_attention_simple(q, k, v, mask), [q, k, v])
    gradcheck(F.scaled_dot_product_attention_simple, [tensor((2, 3)), tensor((4, 3), seed=1), tensor((4, 2), seed=2)])


GRADCHECK_CASES = {
    "linear": case_linear,
    "conv2d": case_conv2d,
    "avg_pool2d": case_avg_pool2d,
    "adaptive_avg_pool2d": case_adaptive_avg_pool2d,
    "batch_norm": case_batch_norm,
    "layer_norm": case_layer_norm,
    "softmax": case_softmax,
    "log_softmax": case_log_softmax,
    "cross_entropy": case_cross_entropy,
    "embedding": case_embedding,
    "l2_normalize": case_l2_normalize,
    "dropout": case_dropout,
    "scaled_dot_product_attention": case_scaled_dot_product_attention,
    "gelu": case_gelu,
    "quick_gelu": case_quick_gelu,
    "sigmoid": case_sigmoid,
    "relu": case_relu,
    "linear_simple": case_linear_simple,
    "quick_gelu_simple": case_quick_gelu_simple,
    "softmax_simple": case_softmax_simple,
    "log_softmax_simple": case_log_softmax_simple,
    "cross_entropy_simple": case_cross_entropy_simple,
    "layer_norm_simple": case_layer_norm_simple,
    "batch_norm_simple": case_batch_norm_simple,
    "conv2d_simple": case_conv2d_simple,
    "scaled_dot_product_attention_simple": case_scaled_dot_product_attention_simple,
}


def test_every_op_has_a_gradcheck():
    assert set(F.__all__) == set(GRADCHECK_CASES)


@pytest.mark.parametrize("op", sorted(GRADCHECK_CASES))
def test_op(op):
    GRADCHECK_CASES[op]()


# ----------------------------------------------------------------------------- laws on random inputs
@pytest.mark.parametrize("seed", range(3))
def test_log_softmax_is_log_of_softmax_and_normalised_rows_have_unit_length(seed):
    x = tensor((4, 6), seed=seed, scale=5)
    close(F.log_softmax(x), np.log(F.softmax(x).numpy()), rtol=1e-9)
    close(np.linalg.norm(F.l2_normalize(x, axis=0).numpy(), axis=0), np.ones(6))
    close(F.cross_entropy(x, ints(6, (4,), seed=seed)),
          -F.log_softmax(x).numpy()[np.arange(4), host(ints(6, (4,), seed=seed))].mean())
