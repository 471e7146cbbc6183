"""Every op in minclip.functional: a forward check against plain NumPy and a float64 gradient check.

GRADCHECK_CASES maps each op name to a test function; `test_every_op_has_a_gradcheck` asserts that
the map covers exactly `F.__all__`, so a new op without a gradient check fails the suite.
Data are made with NumPy and moved with backend.asarray, so the file also runs under CuPy.
"""
import math

import numpy as np
import pytest

import minclip.functional as F
from minclip import Tensor, backend, gradcheck, to_numpy


def t(*shape, seed=0, scale=1.0, grad=True):
    a = np.random.default_rng(seed).standard_normal(shape) * scale
    return Tensor(backend.asarray(a), requires_grad=grad)


def ints(high, shape, seed=0):
    return backend.asarray(np.random.default_rng(seed).integers(0, high, shape))


def close(a, b, **kw):
    np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=kw.get("rtol", 1e-10), atol=kw.get("atol", 1e-12))


# ----------------------------------------------------------------------------- NumPy references
def np_conv2d(x, w, b, stride, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    Ho, Wo = (H - kh) // stride + 1, (W - kw) // stride + 1
    out = np.zeros((N, O, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            patch = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return out + (0 if b is None else b[None, :, None, None])


def np_softmax(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


# ----------------------------------------------------------------------------- one case per op
def case_linear():
    x, w, b = t(2, 3, 4), t(5, 4, seed=1), t(5, seed=2)
    close(F.linear(x, w, b), to_numpy(x.data) @ to_numpy(w.data).T + to_numpy(b.data))
    gradcheck(lambda x, w, b: F.linear(x, w, b), [x, w, b])
    gradcheck(lambda x, w: F.linear(x, w), [t(3, 4, seed=3), w])
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(5, 3\)"):
        F.linear(x, t(5, 3))


def case_relu():
    x = t(4, 5)
    close(F.relu(x), np.maximum(to_numpy(x.data), 0))
    gradcheck(F.relu, [x])


def case_gelu():
    x = t(3, 7)
    xn = to_numpy(x.data)
    close(F.gelu(x), xn * 0.5 * (1 + np.vectorize(math.erf)(xn / math.sqrt(2))))
    close(F.gelu(x, "tanh"), 0.5 * xn * (1 + np.tanh(math.sqrt(2 / math.pi) * (xn + 0.044715 * xn ** 3))))
    gradcheck(F.gelu, [x])
    gradcheck(lambda x: F.gelu(x, "tanh"), [x])


def case_quick_gelu():
    x = t(3, 7)
    xn = to_numpy(x.data)
    close(F.quick_gelu(x), xn / (1 + np.exp(-1.702 * xn)))
    gradcheck(F.quick_gelu, [x])


def case_sigmoid():
    x = t(3, 5)
    close(F.sigmoid(x), 1 / (1 + np.exp(-to_numpy(x.data))))
    gradcheck(F.sigmoid, [x])
    big = F.sigmoid(Tensor(backend.asarray(np.array([-1e4, 1e4]))))
    assert np.isfinite(big.numpy()).all() and big.numpy().tolist() == [0.0, 1.0]


def case_softmax():
    x = t(3, 4, 5)
    for axis in (-1, 0, 1):
        close(F.softmax(x, axis), np_softmax(to_numpy(x.data), axis))
        gradcheck(lambda x: F.softmax(x, axis), [x])
    huge = F.softmax(Tensor(backend.asarray(np.array([[1e4, 0.0, -1e4]]))))
    assert np.isfinite(huge.numpy()).all()


def case_log_softmax():
    x = t(3, 6)
    for axis in (-1, 0):
        close(F.log_softmax(x, axis), np.log(np_softmax(to_numpy(x.data), axis)))
        gradcheck(lambda x: F.log_softmax(x, axis), [x])
    assert np.isfinite(F.log_softmax(Tensor(backend.asarray(np.array([[1e4, -1e4]])))).numpy()).all()


def case_cross_entropy():
    logits, labels = t(5, 4), ints(4, (5,))
    ref = -np.log(np_softmax(to_numpy(logits.data), 1))[np.arange(5), to_numpy(labels)].mean()
    close(F.cross_entropy(logits, labels), ref)
    gradcheck(lambda z: F.cross_entropy(z, labels), [logits])
    with pytest.raises(ValueError, match=r"\(5, 4\).*\(3,\)"):
        F.cross_entropy(logits, ints(4, (3,)))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        F.cross_entropy(logits, backend.asarray(np.array([0, 1, 2, 3, 4])))


def case_layer_norm():
    x, w, b = t(2, 3, 6), t(6, seed=1), t(6, seed=2)
    xn = to_numpy(x.data)
    ref = (xn - xn.mean(-1, keepdims=True)) / np.sqrt(xn.var(-1, keepdims=True) + 1e-5)
    close(F.layer_norm(x, w, b), ref * to_numpy(w.data) + to_numpy(b.data), rtol=1e-9)
    gradcheck(F.layer_norm, [x, w, b])


def case_batch_norm():
    w, b = t(3, seed=1), t(3, seed=2)
    for shape in ((4, 3, 2, 2), (5, 3)):
        x = t(*shape)
        rm, rv = backend.xp.zeros(3), backend.xp.ones(3)
        y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1)
        xn = to_numpy(x.data)
        axes = (0,) + tuple(range(2, xn.ndim))
        n = xn.size // 3
        close(rm, 0.1 * xn.mean(axes))
        close(rv, 0.9 + 0.1 * xn.var(axes) * n / (n - 1))     # PyTorch keeps the unbiased variance
        bshape = (1, 3) + (1,) * (xn.ndim - 2)
        ref = (xn - xn.mean(axes).reshape(bshape)) / np.sqrt(xn.var(axes).reshape(bshape) + 1e-5)
        close(y, ref * to_numpy(w.data).reshape(bshape) + to_numpy(b.data).reshape(bshape), rtol=1e-9)
        gradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), [x, w, b])
        gradcheck(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=False), [x, w, b])


def case_conv2d():
    for (N, C, H, W), (O, kh, kw), stride, pad, bias in [
            ((2, 3, 5, 5), (4, 3, 3), 1, 1, True), ((2, 2, 7, 6), (3, 3, 3), 2, 1, False),
            ((1, 2, 5, 6), (2, 2, 3), 1, 0, True), ((2, 3, 8, 8), (4, 4, 4), 4, 0, False),   # patchify path
            ((2, 4, 3, 3), (5, 1, 1), 1, 0, True)]:                                          # 1x1
        x, w = t(N, C, H, W), t(O, C, kh, kw, seed=1)
        b = t(O, seed=2) if bias else None
        close(F.conv2d(x, w, b, stride, pad),
              np_conv2d(to_numpy(x.data), to_numpy(w.data), None if b is None else to_numpy(b.data), stride, pad))
        args = [x, w] + ([b] if bias else [])
        gradcheck(lambda *a: F.conv2d(*a[:2], a[2] if bias else None, stride, pad), args)
    x_nc = Tensor(backend.asarray(np.random.default_rng(5).standard_normal((5, 5, 3, 2)).transpose(3, 2, 0, 1)),
                  requires_grad=True)  # non-contiguous input
    gradcheck(lambda x, w: F.conv2d(x, w, padding=1), [x_nc, t(2, 3, 3, 3)])
    with pytest.raises(ValueError, match=r"\(2, 3, 5, 5\).*\(4, 2, 3, 3\)"):
        F.conv2d(t(2, 3, 5, 5), t(4, 2, 3, 3))


def case_avg_pool2d():
    x = t(2, 3, 6, 6)
    close(F.avg_pool2d(x, 2), to_numpy(x.data).reshape(2, 3, 3, 2, 3, 2).mean((3, 5)))
    gradcheck(lambda x: F.avg_pool2d(x, 2), [x])
    gradcheck(lambda x: F.avg_pool2d(x, 3, stride=2, padding=1), [t(1, 2, 5, 5)])   # general path
    ref = np_conv2d(to_numpy(x.data).reshape(6, 1, 6, 6), np.full((1, 1, 3, 3), 1 / 9), None, 2, 1)
    close(F.avg_pool2d(x, 3, 2, 1), ref.reshape(2, 3, 3, 3))


def case_adaptive_avg_pool2d():
    x = t(2, 3, 4, 4)
    close(F.adaptive_avg_pool2d(x, 1), to_numpy(x.data).mean((2, 3), keepdims=True))
    gradcheck(lambda x: F.adaptive_avg_pool2d(x, 2), [x])
    with pytest.raises(ValueError, match="equal windows"):
        F.adaptive_avg_pool2d(t(1, 1, 5, 5), 2)


def case_embedding():
    w = t(6, 3)
    ids = backend.asarray(np.array([[1, 4, 1], [0, 1, 5]]))     # repeated ids: gradients add up
    close(F.embedding(ids, w), to_numpy(w.data)[to_numpy(ids)])
    gradcheck(lambda w: F.embedding(ids, w), [w])
    w.grad = None  # gradcheck left its own gradient here
    F.embedding(ids, w).sum().backward()
    assert to_numpy(w.grad)[1].tolist() == [3.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="vocabulary"):
        F.embedding(backend.asarray(np.array([6])), w)


def case_l2_normalize():
    x = t(4, 5)
    xn = to_numpy(x.data)
    close(F.l2_normalize(x), xn / np.linalg.norm(xn, axis=1, keepdims=True))
    gradcheck(F.l2_normalize, [x])
    gradcheck(lambda x: F.l2_normalize(x, axis=0), [x])
    z = Tensor(backend.asarray(np.zeros((2, 3))), requires_grad=True)   # eps-safe at the origin
    y = F.l2_normalize(z)
    y.backward(backend.asarray(np.ones((2, 3))))
    assert np.isfinite(y.numpy()).all() and np.isfinite(to_numpy(z.grad)).all()


def case_dropout():
    x = t(50, 40)
    assert F.dropout(x, 0.5, training=False) is x and F.dropout(x, 0.0) is x
    y = F.dropout(x, 0.25, rng=0).numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.03
    close(y[kept], to_numpy(x.data)[kept] / 0.75)
    gradcheck(lambda x: F.dropout(x, 0.3, rng=1), [t(4, 5)])   # same seed -> same mask in every call
    with pytest.raises(ValueError):
        F.dropout(x, 1.0)


def case_scaled_dot_product_attention():
    q, k, v = t(2, 3, 4, 5), t(2, 3, 4, 5, seed=1), t(2, 3, 4, 6, seed=2)
    mask = F.causal_mask(4, np.float64)
    s = to_numpy(q.data) @ to_numpy(k.data).swapaxes(-1, -2) / math.sqrt(5) + to_numpy(mask)
    close(F.scaled_dot_product_attention(q, k, v, mask), np_softmax(s, -1) @ to_numpy(v.data), rtol=1e-9)
    gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask), [q, k, v])
    gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), [t(3, 2, 4), t(3, 5, 4), t(3, 5, 2)])
    with pytest.raises(ValueError, match="attention"):
        F.scaled_dot_product_attention(t(2, 3), t(2, 4), t(2, 4))


GRADCHECK_CASES = {name[len("case_"):]: fn for name, fn in dict(globals()).items() if name.startswith("case_")}


def test_every_op_has_a_gradcheck():
    assert sorted(GRADCHECK_CASES) == sorted(F.__all__)


@pytest.mark.parametrize("op", sorted(GRADCHECK_CASES))
def test_op(op):
    with backend.default_dtype(np.float64):
        GRADCHECK_CASES[op]()
