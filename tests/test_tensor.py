"""Tensor methods and autograd behaviour: every method with a backward has a float64 gradient check."""
import numpy as np
import pytest

import minclip
from minclip import Tensor, backend, gradcheck, no_grad, to_numpy
from minclip.gradcheck import GradcheckError


def t(*shape, seed=0, grad=True, positive=False):
    a = np.random.default_rng(seed).standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.5
    return Tensor(backend.asarray(a), requires_grad=grad)


# ----------------------------------------------------------------------------- gradient checks
BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "radd": lambda a, b: 2.0 + a * b, "rsub": lambda a, b: 2.0 - a * b,
    "rmul": lambda a, b: 3.0 * a + b, "rdiv": lambda a, b: 2.0 / b + a,
}


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 1, 4), (2, 4)), ((2, 3), ()), ((4,), (3, 4))])
def test_binary_ops_with_broadcasting(op, shapes):
    a, b = t(*shapes[0]), t(*shapes[1], seed=1, positive=True)
    gradcheck(BINARY[op], [a, b])


def test_ops_with_arrays_and_scalars_keep_float32():
    x = Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    for y in (x * 2.0, 2.0 * x, x + 1, x / 3, 1 - x, x ** 2, -x):
        assert y.dtype == np.float32
    y = backend.asarray(np.ones((2, 2), np.float32)) * x   # ndarray on the left uses Tensor.__rmul__
    assert isinstance(y, Tensor)


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
                                    ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,))])
def test_matmul_batch_broadcast_and_1d(shapes):
    gradcheck(lambda a, b: a @ b, [t(*shapes[0]), t(*shapes[1], seed=1)])


def test_matmul_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 2\)"):
        t(3, 4) @ t(5, 2)


@pytest.mark.parametrize("name, fn, positive", [
    ("pow", lambda x: x ** 3, False), ("pow_frac", lambda x: x ** 0.5, True), ("neg", lambda x: -x, False),
    ("exp", lambda x: x.exp(), False), ("log", lambda x: x.log(), True), ("sqrt", lambda x: x.sqrt(), True),
    ("tanh", lambda x: x.tanh(), False), ("astype", lambda x: x.astype(np.float64) * 2, False),
    ("reshape", lambda x: x.reshape(4, 3), False), ("reshape_tuple", lambda x: x.reshape((2, 6)), False),
    ("transpose", lambda x: x.transpose(), False), ("T", lambda x: x.T, False),
    ("permute", lambda x: x.reshape(2, 2, 3).permute(2, 0, 1), False),
])
def test_unary_methods(name, fn, positive):
    gradcheck(fn, [t(3, 4, positive=positive)])


@pytest.mark.parametrize("method", ["sum", "mean", "max"])
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(method, axis, keepdims):
    x = t(2, 3, 4)
    ref = getattr(to_numpy(x.data), method)(axis=axis, keepdims=keepdims)
    y = getattr(x, method)(axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(y.numpy(), ref)
    gradcheck(lambda x: getattr(x, method)(axis=axis, keepdims=keepdims), [x])


def test_max_ties_share_the_gradient():
    x = Tensor(backend.asarray(np.array([1.0, 3.0, 3.0])), requires_grad=True)
    x.max().backward()
    assert to_numpy(x.grad).tolist() == [0.0, 0.5, 0.5]


@pytest.mark.parametrize("index", [
    (slice(1, 3),), (Ellipsis, 1), (None, 0, slice(None, None, 2)), (1, -1),
    (np.array([0, 2, 0, 0]),),                    # repeated rows: gradients add up (scatter-add)
    (np.array([0, 1]), np.array([2, 3])),
])
def test_indexing(index):
    x = t(3, 4)
    idx = tuple(backend.asarray(i) if isinstance(i, np.ndarray) else i for i in index)
    np.testing.assert_allclose(x[idx].numpy(), to_numpy(x.data)[index])
    gradcheck(lambda x: x[idx], [x])


def test_boolean_mask_and_repeated_index_gradients():
    x = t(3, 4)
    mask = backend.asarray(to_numpy(x.data) > 0)
    gradcheck(lambda x: x[mask], [x])
    x.grad = None
    x[backend.asarray(np.array([1, 1, 1]))].sum().backward()
    assert to_numpy(x.grad)[1].tolist() == [3.0] * 4


def test_concat_stack_and_non_contiguous_inputs():
    a, b = t(2, 3), t(4, 3, seed=1)
    gradcheck(lambda a, b: minclip.concat([a, b], axis=0), [a, b])
    gradcheck(lambda a, b: minclip.stack([a, b[:2]], axis=1), [a, b])
    nc = Tensor(backend.asarray(np.random.default_rng(2).standard_normal((4, 3))).T, requires_grad=True)
    gradcheck(lambda x, y: (x @ y).tanh().sum(axis=0), [nc, t(4, 2, seed=3)])


# ----------------------------------------------------------------------------- autograd behaviour
def test_grads_accumulate_and_graph_is_freed():
    x = t(3)
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), 5.0)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()
    z = (x * x).sum()
    z.backward(retain_graph=True)
    z.backward()


def test_diamond_graph_sums_both_paths():
    x = t(4)
    a = x * 2
    (a * a + a).sum().backward()           # d/dx (4x^2 + 2x) = 8x + 2
    np.testing.assert_allclose(to_numpy(x.grad), 8 * to_numpy(x.data) + 2)


def test_deep_graph_needs_no_recursion():
    x = t(2)
    y = x
    for _ in range(3000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), 1.0001 ** 3000)


def test_no_grad_records_nothing_and_detach_cuts():
    x = t(3)
    with no_grad():
        y = x * 2
    assert not y.requires_grad and y.creator is None
    d = (x * 2).detach()
    assert not d.requires_grad and d.creator is None


def test_backward_errors_are_clear():
    x = t(3)
    with pytest.raises(RuntimeError, match="single-element"):
        (x * 2).backward()
    with pytest.raises(ValueError, match="shape"):
        (x * 2).backward(backend.asarray(np.ones(4)))


def test_comparisons_item_numpy():
    x = t(3)
    m = x > 0
    assert not m.requires_grad and m.dtype == bool
    assert isinstance(x.numpy(), np.ndarray) and isinstance(x.sum().item(), float)


def test_gradcheck_catches_a_wrong_backward():
    class WrongSquare(minclip.Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, g):
            return g * self.x * 2.01  # 0.5% off

    with pytest.raises(GradcheckError, match="analytic .* numeric"):
        gradcheck(lambda x: WrongSquare()(x), [t(3, 2)])
    with pytest.raises(GradcheckError, match="direction"):
        gradcheck(lambda x: WrongSquare()(x), [t(3, 2)], max_elements=1)  # the directional mode
    gradcheck(lambda x: x * x, [t(3, 2)], max_elements=1)
    with pytest.raises(ValueError, match="float64"):
        gradcheck(lambda x: x * x, [Tensor(np.ones(3, np.float32), requires_grad=True)])
    with pytest.raises(GradcheckError, match="no gradient"):
        gradcheck(lambda x, y: x * 2, [t(2), t(2, seed=1)])
