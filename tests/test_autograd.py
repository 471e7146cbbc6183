"""Tensor methods and the autograd engine.

Every Tensor method with a backward gets a float64 gradient check (minclip.gradcheck) and a forward
check against NumPy; then the engine's behaviour: accumulation, freeing the graph, no_grad, errors,
diamond and deep graphs, dtypes.
"""
import numpy as np
import pytest
from _helpers import close, data, host, strided, tensor, transposed, wrap
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import minclip
from minclip import Function, Tensor, backend, concat, enable_grad, gradcheck, no_grad, split, stack, using_config

# ----------------------------------------------------------------------------- binary operators
BINARY = {  # name: (minclip, numpy); the second operand is positive, so division is safe
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
}
SHAPES = [((3, 4), (3, 4)), ((3, 1, 4), (2, 4)), ((2, 4), (3, 1, 4)), ((2, 3), ()), ((), (2, 3)), ((), ()),
          ((4,), (3, 4)), ((3, 4), (3, 1)), ((1, 4), (3, 1))]


@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_op_broadcasts_and_unbroadcasts(op, shapes):
    mc, ref = BINARY[op]
    a, b = tensor(shapes[0]), tensor(shapes[1], seed=1, positive=True)
    y = mc(a, b)
    assert y.shape == np.broadcast_shapes(*shapes)
    close(y, ref(host(a), host(b)))
    gradcheck(mc, [a, b])


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_op_on_non_contiguous_data(op):
    gradcheck(BINARY[op][0], [transposed((3, 4)), strided((3, 4), seed=1)])


@pytest.mark.parametrize("name, fn, ref", [
    ("radd", lambda x: 2.0 + x, lambda x: 2.0 + x),
    ("rsub", lambda x: 2.0 - x, lambda x: 2.0 - x),
    ("rmul", lambda x: 3.0 * x, lambda x: 3.0 * x),
    ("rdiv", lambda x: 2.0 / x, lambda x: 2.0 / x),
    ("add_int", lambda x: x + 1, lambda x: x + 1),
    ("sub", lambda x: x - 0.5, lambda x: x - 0.5),
    ("div", lambda x: x / 4, lambda x: x / 4),
    ("pow_int", lambda x: x ** 3, lambda x: x ** 3),
    ("pow_frac", lambda x: x ** 0.5, lambda x: x ** 0.5),
    ("pow_neg", lambda x: x ** -2, lambda x: x ** -2.0),
    ("neg", lambda x: -x, lambda x: -x),
])
def test_ops_with_python_scalars(name, fn, ref):
    x = tensor((3, 4), positive=True)
    close(fn(x), ref(host(x)))
    gradcheck(fn, [x])


@pytest.mark.parametrize("name, fn", [
    ("radd", lambda c, x: c + x), ("rsub", lambda c, x: c - x), ("rmul", lambda c, x: c * x),
    ("rdiv", lambda c, x: c / x), ("rmatmul", lambda c, x: c @ x),
    ("add", lambda c, x: x + c), ("sub", lambda c, x: x - c), ("mul", lambda c, x: x * c),
    ("div", lambda c, x: x / c), ("matmul", lambda c, x: x @ c),
])
def test_ops_with_backend_arrays_on_either_side(name, fn):
    c_np = data((4, 4), seed=5, positive=True)
    c = backend.asarray(c_np)
    x = tensor((4, 4), seed=1, positive=True)
    y = fn(c, x)  # an array on the left must call the Tensor's reflected operator (__array_priority__)
    assert isinstance(y, Tensor) and y.requires_grad
    close(y, fn(c_np, host(x)))
    gradcheck(lambda x: fn(c, x), [x])


def test_python_scalars_keep_float32():
    x = wrap(np.ones((2, 2), np.float32))
    for y in (x * 2.0, 2.0 * x, x + 1, 1 + x, x - 0.5, 1.0 - x, x / 3, 3.0 / x, x ** 2, x ** 0.5, -x):
        assert y.dtype == np.float32
    for y in (x.sum(), x.mean(), x.max(), x.exp(), x.log(), x.sqrt(), x.tanh(), x.sum(axis=0), x.mean(axis=1)):
        assert y.dtype == np.float32


def test_float32_gradients_stay_float32():
    for fn in (lambda x: x * 2.0, lambda x: 1.0 / x, lambda x: x ** 2, lambda x: x.max(axis=1), lambda x: x.max(),
               lambda x: x.mean(axis=0), lambda x: x[backend.asarray(np.array([0, 0]))], lambda x: x.sqrt(),
               lambda x: x.T @ x):
        x = wrap(data((2, 2), positive=True).astype(np.float32))
        fn(x).sum().backward()
        assert x.grad.dtype == np.float32


def test_python_numbers_with_integer_and_boolean_tensors_are_not_truncated():
    # a number borrows the dtype of the tensor beside it only when that is floating: 0.5 must not become 0
    close(wrap(np.array([1, 2, 3]), requires_grad=False) * 0.5, [0.5, 1.0, 1.5])
    x = tensor((5,))
    close((x > 0) * 1.0, (host(x) > 0) * 1.0)
    close(wrap(np.array([1, 2]), requires_grad=False) + 1, [2, 3])


# ----------------------------------------------------------------------------- matmul
@pytest.mark.parametrize("shapes", [
    ((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4, 3), (2, 3, 5)), ((2, 1, 3, 4), (5, 4, 2)),
    ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,)),
], ids=str)
def test_matmul_with_batch_broadcasting_and_1d_operands(shapes):
    a, b = tensor(shapes[0]), tensor(shapes[1], seed=1)
    close(a @ b, host(a) @ host(b))
    gradcheck(lambda a, b: a @ b, [a, b])


def test_matmul_on_non_contiguous_data():
    gradcheck(lambda a, b: a @ b, [transposed((3, 4)), strided((4, 2), seed=1)])


@pytest.mark.parametrize("sa, sb", [((3, 4), (5, 2)), ((4,), (3,)), ((2, 3), (2,))])
def test_matmul_shape_mismatch_names_both_shapes(sa, sb):
    with pytest.raises(ValueError, match=rf"matmul.*{sa}.*{sb}".replace("(", r"\(").replace(")", r"\)")):
        tensor(sa) @ tensor(sb)


def test_matmul_of_a_0d_operand_is_refused():
    with pytest.raises(ValueError, match="matmul"):
        tensor(()) @ tensor((3,))


# ----------------------------------------------------------------------------- elementwise math and casts
@pytest.mark.parametrize("name, fn, ref, positive", [
    ("exp", lambda x: x.exp(), np.exp, False),
    ("log", lambda x: x.log(), np.log, True),
    ("sqrt", lambda x: x.sqrt(), np.sqrt, True),
    ("tanh", lambda x: x.tanh(), np.tanh, False),
    ("neg", lambda x: -x, np.negative, False),
    ("astype", lambda x: x.astype(np.float64) * 2, lambda x: x * 2, False),
])
def test_elementwise_methods(name, fn, ref, positive):
    x = tensor((3, 4), positive=positive)
    close(fn(x), ref(host(x)))
    gradcheck(fn, [x])
    gradcheck(fn, [transposed((3, 4), seed=1, positive=positive)])


def test_astype_casts_forward_and_the_gradient_back():
    x = wrap(np.array([1.5, -2.0], np.float32))
    y = x.astype(np.float64)
    assert y.dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    close(x.grad, [3.0, -4.0])


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("name, fn, ref", [
    ("reshape_args", lambda x: x.reshape(4, 6), lambda x: x.reshape(4, 6)),
    ("reshape_tuple", lambda x: x.reshape((6, 2, 2)), lambda x: x.reshape(6, 2, 2)),
    ("reshape_minus1", lambda x: x.reshape(-1, 3), lambda x: x.reshape(-1, 3)),
    ("transpose_all", lambda x: x.transpose(), lambda x: x.transpose()),
    ("transpose_axes", lambda x: x.transpose(1, 2, 0), lambda x: x.transpose(1, 2, 0)),
    ("transpose_tuple", lambda x: x.transpose((2, 0, 1)), lambda x: x.transpose(2, 0, 1)),
    ("transpose_negative", lambda x: x.transpose(0, -1, 1), lambda x: x.transpose(0, 2, 1)),
    ("T", lambda x: x.T, lambda x: x.T),
    ("permute", lambda x: x.permute(2, 0, 1), lambda x: x.transpose(2, 0, 1)),
])
def test_shape_methods(name, fn, ref):
    x = tensor((2, 3, 4))
    close(fn(x), ref(host(x)))
    gradcheck(fn, [x])
    gradcheck(fn, [transposed((2, 3, 4), seed=1)])


# ----------------------------------------------------------------------------- reductions
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2), (-1, -3), (0, 1, 2)], ids=str)
@pytest.mark.parametrize("method", ["sum", "mean", "max"])
def test_reductions(method, axis, keepdims):
    x = tensor((2, 3, 4))
    y = getattr(x, method)(axis=axis, keepdims=keepdims)
    ref = getattr(host(x), method)(axis=axis, keepdims=keepdims)
    assert y.shape == ref.shape
    close(y, ref)
    gradcheck(lambda x: getattr(x, method)(axis=axis, keepdims=keepdims), [x])


@pytest.mark.parametrize("method", ["sum", "mean", "max"])
def test_reductions_on_non_contiguous_data(method):
    gradcheck(lambda x: getattr(x, method)(axis=0), [transposed((3, 4))])
    gradcheck(lambda x: getattr(x, method)(axis=-1, keepdims=True), [strided((3, 4), seed=1)])


def test_max_ties_split_the_gradient():
    x = wrap(np.array([1.0, 3.0, 3.0]))
    x.max().backward()
    close(x.grad, [0.0, 0.5, 0.5])
    m = wrap(np.array([[2.0, 2.0, 2.0, 1.0], [0.0, 5.0, -1.0, 5.0]]))
    m.max(axis=1).backward(backend.asarray(np.array([3.0, 1.0])))
    close(m.grad, [[1.0, 1.0, 1.0, 0.0], [0.0, 0.5, 0.0, 0.5]])


# ----------------------------------------------------------------------------- indexing
def _index(*items):
    """An index on the current backend: NumPy arrays inside are moved with backend.asarray."""
    items = tuple(backend.asarray(i) if isinstance(i, np.ndarray) else i for i in items)
    return items[0] if len(items) == 1 else items


@pytest.mark.parametrize("index", [
    (1,), (-1,), (slice(1, 3),), (slice(None, None, -2),), (1, slice(0, 4, 2)), (Ellipsis, 2), (Ellipsis,),
    (None, 0), (slice(None), None, -1), (Ellipsis, None, slice(1, 3)),
    (np.array([0, 2, 0, 0]),),                               # repeated rows: gradients add up (scatter-add)
    (np.array([0, 1, 1]), np.array([2, 3, 3])),              # repeated (row, col) pairs
    (slice(1, 3), np.array([3, 0, 3])),                      # basic and advanced together
    (np.array([[0, 1], [1, 1]]),),                           # a 2-D index array
    ([2, 2, 1],),                                            # a Python list
], ids=str)
def test_indexing(index):
    x = tensor((3, 4))
    idx = _index(*index)
    ref = host(x)[index[0] if len(index) == 1 else index]
    close(x[idx], ref)
    gradcheck(lambda x: x[idx], [x])
    gradcheck(lambda x: x[idx], [transposed((3, 4), seed=1)])


def test_boolean_mask_indexing():
    x = tensor((3, 4))
    mask_np = host(x) > 0
    mask = backend.asarray(mask_np)
    close(x[mask], host(x)[mask_np])
    gradcheck(lambda x: x[mask], [x])
    gradcheck(lambda x: x[backend.asarray(np.array([True, False, True]))], [x])
    x.zero_grad()
    x[mask].sum().backward()
    close(x.grad, mask_np * 1.0)


def test_repeated_integer_index_scatter_adds():
    x = tensor((3, 4))
    x[backend.asarray(np.array([1, 1, 1, 0]))].sum().backward()
    close(x.grad, [[1.0] * 4, [3.0] * 4, [0.0] * 4])


def test_index_with_a_tensor_of_ids():
    x = tensor((5, 2))
    ids = Tensor(backend.asarray(np.array([4, 4, 0])))
    close(x[ids], host(x)[[4, 4, 0]])
    gradcheck(lambda x: x[ids], [x])


# ----------------------------------------------------------------------------- concat, stack and split
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis):
    shapes = {0: [(2, 3), (1, 3), (3, 3)], 1: [(2, 1), (2, 3), (2, 2)], -1: [(2, 1), (2, 3), (2, 2)]}[axis]
    ts = [tensor(s, seed=i) for i, s in enumerate(shapes)]
    close(concat(ts, axis=axis), np.concatenate([host(t) for t in ts], axis=axis))
    gradcheck(lambda *ts: concat(ts, axis=axis), ts)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack(axis):
    ts = [tensor((2, 3), seed=i) for i in range(3)]
    close(stack(ts, axis=axis), np.stack([host(t) for t in ts], axis=axis))
    gradcheck(lambda *ts: stack(ts, axis=axis), ts)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_split(axis):
    x = tensor((6, 4, 6))
    parts = split(x, 2 if axis == 1 else 3, axis=axis)
    for got, ref in zip(parts, np.split(host(x), len(parts), axis=axis)):
        close(got, ref)
    gradcheck(lambda x: split(x, 3, axis=axis)[1], [x] if axis != 1 else [tensor((6, 3, 6))])
    gradcheck(lambda x: concat(split(x, 3), axis=-1) * 2, [x])  # concat undoes split
    assert len(split(x, 1)) == 1 and split(x, 1)[0].shape == (6, 4, 6)  # one part is still a tuple


def test_split_into_unequal_parts_names_the_shape():
    with pytest.raises(ValueError, match=r"axis -1 of shape \(2, 5\) does not divide into 3 equal parts"):
        split(tensor((2, 5)), 3)


def test_concat_and_stack_of_non_contiguous_and_mixed_inputs():
    a, b = transposed((2, 3)), tensor((2, 3), seed=1, requires_grad=False)
    gradcheck(lambda a: concat([a, b], axis=0), [a])
    gradcheck(lambda a, c: stack([a, c, a], axis=1), [a, strided((2, 3), seed=2)])
    concat([a, b]).sum().backward()
    assert b.grad is None


# ----------------------------------------------------------------------------- detach, numpy, item
def test_detach_shares_data_but_cuts_the_graph():
    x = tensor((3,))
    d = (x * 2).detach()
    assert not d.requires_grad and d.creator is None
    close(d, 2 * host(x))
    y = x * x.detach()  # only the first factor carries a gradient
    y.sum().backward()
    close(x.grad, host(x))
    assert x.detach().data is x.data


def test_numpy_and_item():
    x = tensor((2, 3))
    a = x.numpy()
    assert type(a) is np.ndarray and a.shape == (2, 3) and a.dtype == np.float64
    s = x.sum()
    assert isinstance(s.item(), float) and s.item() == pytest.approx(host(x).sum())
    assert tensor((1, 1)).item() == pytest.approx(data((1, 1)).item())
    assert "requires_grad=True" in repr(x) and len(x) == 2 and x.ndim == 2 and x.size == 6


# ----------------------------------------------------------------------------- autograd behaviour
def test_gradients_accumulate_across_backward_calls():
    x = tensor((3,))
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    close(x.grad, np.full(3, 5.0))
    x.zero_grad()
    assert x.grad is None


def test_graph_is_freed_after_backward_unless_retained():
    x = tensor((3,))
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()
    x.zero_grad()
    z = (x * x).exp().sum()
    z.backward(retain_graph=True)
    g1 = host(x.grad).copy()
    z.backward()
    close(x.grad, 2 * g1)


def test_no_grad_records_no_graph():
    x = tensor((3,))
    with no_grad():
        y = (x * 2).exp().sum()
        assert not minclip.autograd.Config.enable_backprop
    assert not y.requires_grad and y.creator is None
    assert minclip.autograd.Config.enable_backprop
    with pytest.raises(KeyError):
        with no_grad():
            raise KeyError
    assert minclip.autograd.Config.enable_backprop  # restored after an error
    assert (x * 2).requires_grad


def test_enable_grad_records_inside_no_grad_and_restores_it():
    x = tensor((3,))
    with no_grad():
        with enable_grad():
            y = (x * x).sum()
        assert not minclip.autograd.Config.enable_backprop and not (x * 2).requires_grad
    y.backward()
    close(x.grad, 2 * host(x))
    with pytest.raises(KeyError):
        with no_grad(), enable_grad():
            raise KeyError
    assert minclip.autograd.Config.enable_backprop


def test_using_config_sets_and_restores_a_flag_and_rejects_unknown_names():
    with using_config("enable_backprop", False):
        assert not minclip.autograd.Config.enable_backprop
        with using_config("enable_backprop", True):
            assert minclip.autograd.Config.enable_backprop
        assert not minclip.autograd.Config.enable_backprop
    assert minclip.autograd.Config.enable_backprop
    with pytest.raises(AttributeError, match="Config has no setting 'enable_backpropagation'"):
        with using_config("enable_backpropagation", False):
            pass
    assert not hasattr(minclip.autograd.Config, "enable_backpropagation")


def test_inputs_without_requires_grad_record_nothing():
    a, b = tensor((3,), requires_grad=False), tensor((3,), seed=1, requires_grad=False)
    y = a * b
    assert not y.requires_grad and y.creator is None
    c = tensor((3,), seed=2)
    (a * c).sum().backward()
    assert a.grad is None and c.grad is not None


def test_backward_of_a_non_scalar_needs_a_gradient():
    x = tensor((3,))
    with pytest.raises(RuntimeError, match=r"shape \(3,\).*single-element.*grad"):
        (x * 2).backward()
    y = x[:1].reshape(1, 1) * 2  # a single element of any shape needs none
    y.backward()
    close(x.grad, [2.0, 0.0, 0.0])


def test_backward_with_a_wrong_gradient_shape_names_both_shapes():
    x = tensor((3,))
    with pytest.raises(ValueError, match=r"\(4,\).*\(3,\)"):
        (x * 2).backward(backend.asarray(np.ones(4)))


def test_backward_with_an_explicit_gradient():
    x = tensor((3,))
    g = np.array([1.0, -2.0, 0.5])
    (x * 3).backward(backend.asarray(g))
    close(x.grad, 3 * g)
    leaf = tensor((2,), seed=1)
    leaf.backward(backend.asarray(np.array([1.0, 2.0])))
    close(leaf.grad, [1.0, 2.0])


def test_diamond_graph_sums_both_paths():
    x = tensor((4,))
    a = x * 2
    (a * a + a).sum().backward()  # d/dx (4x^2 + 2x) = 8x + 2
    close(x.grad, 8 * host(x) + 2)
    x.zero_grad()
    (x + x * x + x.exp()).sum().backward()  # three uses of x, paths of different depths
    close(x.grad, 1 + 2 * host(x) + np.exp(host(x)))


def test_x_times_x_and_x_plus_x():
    x = tensor((3,))
    gradcheck(lambda x: x * x, [x])
    gradcheck(lambda x: x + x - x / (x * x + 1), [x])


def test_a_deep_chain_needs_no_recursion():
    x = tensor((2,))
    y = x
    for _ in range(3000):
        y = y * 1.0001 + 0.0
    y.sum().backward()
    close(x.grad, np.full(2, 1.0001 ** 3000), rtol=1e-9)
    deep = x
    for _ in range(3000):
        deep = deep.tanh()
    del deep  # freeing a deep graph without backward must not overflow the stack either


def test_unused_output_of_a_multi_output_function_gets_a_zero_gradient():
    class Split(Function):
        def forward(self, x):
            return x * 2, x * 3

        def backward(self, g2, g3):
            return g2 * 2 + g3 * 3

    x = tensor((3,))
    a, b = Split()(x)
    a.sum().backward()
    close(x.grad, np.full(3, 2.0))
    gradcheck(lambda x: Split()(x)[1], [x])


def test_comparisons_give_boolean_tensors_without_gradient():
    x, y = tensor((4,)), tensor((4,), seed=1)
    xn, yn = host(x), host(y)
    for got, ref in [(x < y, xn < yn), (x <= 0, xn <= 0), (x > y, xn > yn), (x >= 0.1, xn >= 0.1),
                     (x == x, xn == xn), (x != y, xn != yn)]:
        assert isinstance(got, Tensor) and got.dtype == bool
        assert not got.requires_grad and got.creator is None
        np.testing.assert_array_equal(got.numpy(), ref)
    gradcheck(lambda x: x * (x > 0), [x])  # the mask is a constant
    assert hash(x) != hash(y) and {x: 1}[x] == 1  # tensors hash by identity


def test_truth_of_a_multi_element_tensor_is_an_error_as_in_numpy():
    a, b = wrap(np.array([1.0, 2.0])), wrap(np.array([5.0, 6.0]))
    with pytest.raises(ValueError, match=r"truth value of a Tensor of shape \(2,\) is ambiguous"):
        bool(a == b)
    with pytest.raises(ValueError, match="ambiguous"):
        if a:
            pass
    with pytest.raises(ValueError, match="ambiguous"):  # not silently True, as it was through __len__
        Tensor([1, 2]) in [Tensor([5, 6])]
    with pytest.raises(ValueError, match=r"shape \(0,\)"):
        bool(wrap(np.zeros(0)))
    assert a in [a, b]  # the same object matches by identity, before `==` is asked
    with pytest.raises(ValueError, match="ambiguous"):
        a in [b, a]  # as NumPy: `==` with b comes first; search lists of tensors with `any(t is a ...)`
    assert not (a == b).any() and (a == a).all() and (a != b).all()
    assert isinstance((a == b).any(), Tensor)


def test_truth_of_a_one_element_tensor_is_its_value():
    assert bool(wrap(np.array(3.0))) and not bool(wrap(np.array([0.0])))
    assert bool(wrap(np.array([[2.0]])) == 2.0)
    assert Tensor([5]) in [Tensor([1]), Tensor([5])] and Tensor([7]) not in [Tensor([1])]  # elementwise, as NumPy
    x = tensor((4,))
    assert len({x: 1, tensor((4,)): 2}) == 2  # dict keys: by identity, never asked for their truth


def test_non_leaf_tensors_keep_no_grad():
    x = tensor((3,))
    y = x * 2
    (y * y).sum().backward()
    assert y.grad is None and x.grad is not None


# ----------------------------------------------------------------------------- property tests
@settings(max_examples=30, deadline=None)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
       op=st.sampled_from(["add", "sub", "mul"]))
def test_broadcast_gradient_counts_every_use(shapes, op):
    """d/da sum(a op b) for b = 1 is the number of times each element of a is broadcast: size(out) / size(a)."""
    sa, sb = shapes.input_shapes
    a = tensor(sa)
    b = wrap(np.ones(sb))
    (BINARY[op][0](a, b)).sum().backward()
    out = int(np.prod(shapes.result_shape))
    close(a.grad, np.full(sa, out / max(int(np.prod(sa)), 1)))
    sign = -1.0 if op == "sub" else 1.0
    expected_b = (host(a) if op == "mul" else np.full(sa, sign)) * np.ones(shapes.result_shape)
    close(b.grad, expected_b.sum(axis=tuple(range(len(shapes.result_shape) - len(sb)))).sum(
        axis=tuple(i for i, n in enumerate(sb) if n == 1), keepdims=True).reshape(sb))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=1, max_size=6))
def test_sum_of_parts_equals_whole(values):
    """Splitting with indexing and adding the parts back gives the gradient of the whole sum: all ones."""
    x = wrap(np.array(values))
    k = len(values) // 2
    (x[:k].sum() + x[k:].sum()).backward()
    close(x.grad, np.ones(len(values)))
