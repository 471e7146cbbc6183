"""The gradient checker itself: it must pass correct backwards and catch wrong ones, in both modes
(every element, and random directions for big inputs), and refuse inputs it cannot check."""
import re

import numpy as np
import pytest
from _helpers import host, tensor, wrap

import minclip.functional as F
from minclip import Function, Tensor, backend, gradcheck
from minclip.gradcheck import GradcheckError


class Square(Function):
    """x ** 2 with a backward that is off by `error` (a relative error) at one element."""
    def __init__(self, error=0.0, at=(1, 0)):
        self.error, self.at = error, at

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        gx = 2 * self.x * g
        gx[self.at] *= 1 + self.error
        return gx


class Scale(Function):
    """x * 3 whose backward leaks a gradient into a constant second input."""
    def forward(self, x, c):
        return x * 3

    def backward(self, g):
        self.inputs[1].grad = g  # what a buggy op might do
        return g * 3, None


def test_a_correct_backward_passes_and_inputs_are_restored():
    x = tensor((3, 2))
    before = host(x).copy()
    assert gradcheck(lambda x: Square()(x), [x]) is True
    np.testing.assert_array_equal(host(x), before)
    assert gradcheck(lambda x: Square()(x), [x], max_elements=1) is True  # the directional mode
    np.testing.assert_array_equal(host(x), before)


def test_a_wrong_backward_is_caught_naming_the_worst_index_and_both_values():
    x = tensor((3, 2))
    with pytest.raises(GradcheckError) as e:
        gradcheck(lambda x: Square(error=0.25, at=(1, 0))(x), [x])
    msg = str(e.value)
    assert "tensor #0" in msg and "(3, 2)" in msg and "at index (1, 0)" in msg
    m = re.search(r"analytic (\S+), numeric (\S+),", msg)
    analytic, numeric = float(m.group(1)), float(m.group(2))
    assert analytic == pytest.approx(1.25 * numeric, rel=1e-5)  # the analytic value is the wrong one


def test_a_small_error_at_another_element_is_caught_too():
    with pytest.raises(GradcheckError, match=r"at index \(2, 1\)"):
        gradcheck(lambda x: Square(error=0.01, at=(2, 1))(x), [tensor((3, 2))])


def test_directional_mode_passes_a_correct_op_and_fails_a_wrong_one():
    x, w = tensor((3, 4)), tensor((2, 4), seed=1)
    assert gradcheck(lambda x, w: F.linear(x, w).tanh(), [x, w], max_elements=1, n_directions=4)
    with pytest.raises(GradcheckError, match=r"direction #0 over all 1 tensors.*analytic.*numeric"):
        gradcheck(lambda x: Square(error=0.5)(x), [tensor((3, 2))], max_elements=1)
    # a bigger op, checked with a handful of forward passes instead of two per element
    big = tensor((40, 50), seed=2)
    assert gradcheck(lambda x: F.softmax(x, -1), [big], max_elements=100)
    with pytest.raises(GradcheckError, match="direction"):
        gradcheck(lambda x: Square(error=0.5, at=(7, 9))(x), [big], max_elements=100)


def test_float32_inputs_are_refused():
    x = wrap(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"float64.*float32.*\(2, 3\)"):
        gradcheck(lambda x: x * x, [x])


def test_nothing_to_check_is_refused():
    with pytest.raises(ValueError, match="requires_grad"):
        gradcheck(lambda x: x * 2, [tensor((3,), requires_grad=False)])


def test_a_checked_tensor_without_gradient_is_an_error():
    with pytest.raises(GradcheckError, match=r"tensor #1 \(shape \(2,\)\) received no gradient"):
        gradcheck(lambda x, y: x * 2, [tensor((2,)), tensor((2,), seed=1)])
    with pytest.raises(GradcheckError, match="no gradient"):
        gradcheck(lambda x, y: x * y.detach(), [tensor((2,)), tensor((2,), seed=1)])


def test_a_gradient_of_the_wrong_shape_is_an_error():
    class SumBack(Function):
        def forward(self, x):
            return x * 1.0

        def backward(self, g):
            return g.sum()

    with pytest.raises(GradcheckError, match=r"\(3,\).*grad"):
        gradcheck(lambda x: SumBack()(x), [tensor((3,))])


def test_a_gradient_into_a_constant_is_an_error():
    c = tensor((2,), seed=1, requires_grad=False)
    with pytest.raises(GradcheckError, match="without requires_grad"):
        gradcheck(lambda x, c: Scale()(x, c), [tensor((2,)), c])


def test_integer_inputs_pass_through_and_get_no_gradient():
    ids = Tensor(backend.asarray(np.array([0, 2, 2])))
    w = tensor((3, 2))
    assert gradcheck(lambda ids, w: F.embedding(ids, w), [ids, w])
    assert ids.grad is None


def test_parameters_used_inside_fn_are_checked():
    w = tensor((4, 2), seed=1)
    assert gradcheck(lambda x: x @ w, [tensor((3, 4))], params=[w])
    assert w.grad is not None and w.grad.shape == (4, 2)

    class WrongMatMul(Function):
        def forward(self, x, w):
            self.x, self.w = x, w
            return x @ w

        def backward(self, g):
            return g @ self.w.T, 1.1 * (self.x.T @ g)

    with pytest.raises(GradcheckError, match=r"tensor #1 \(shape \(4, 2\)\)"):
        gradcheck(lambda x: WrongMatMul()(x, w), [tensor((3, 4))], params=[w])


def test_non_finite_values_are_failures():
    x = wrap(np.array([-1.0, 2.0]))  # log(-1) is nan: the numeric derivative is nan, never a pass
    with np.errstate(invalid="ignore"), pytest.raises(GradcheckError, match="nan"):
        gradcheck(lambda x: x.log(), [x])
    z = wrap(np.array([0.0, 2.0]))  # sqrt'(0) is inf
    with np.errstate(divide="ignore", invalid="ignore"), pytest.raises(GradcheckError, match="at index \\(0,\\)"):
        gradcheck(lambda x: x.sqrt(), [z])


def test_a_stale_gradient_on_an_input_is_cleared_first():
    x = tensor((3,))
    (x * 100).sum().backward()  # were it kept, the analytic gradient would be off by 100
    assert gradcheck(lambda x: x * x, [x])


def test_grading_helpers_name_what_is_wrong():
    """check_grad and check_close, the assertions of the course's test cells, fail with plain messages."""
    from minclip.autograd import Function
    from minclip.gradcheck import check_close, check_grad

    class WrongSquare(Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, g):
            return g * self.x  # the factor 2 is missing

    x = Tensor(np.random.default_rng(0).standard_normal((3, 2)), requires_grad=True)
    check_grad("square", lambda t: t * t, [x])
    with pytest.raises(AssertionError, match="WrongSquare: the backward disagrees with central differences"):
        check_grad("WrongSquare", lambda t: WrongSquare()(t), [x])
    check_close("copy", x, x.data.copy())
    with pytest.raises(AssertionError, match=r"shape \(3, 2\), expected \(2, 3\)"):
        check_close("shape", x, np.zeros((2, 3)))
    with pytest.raises(AssertionError, match="values differ from minclip's by up to 1 "):
        check_close("values", x, x.data + 1)


def test_exercise_names_a_missing_or_wrong_answer_and_reports_a_right_one(capsys):
    """The check cells of the notebooks' exercises: a stub's NotImplementedError and a failed check each
    become one AssertionError naming the exercise; other errors pass through as they are."""
    from minclip.gradcheck import exercise

    def stub():
        raise NotImplementedError()

    with pytest.raises(AssertionError, match=r"^Cos.backward: not written yet; replace `raise NotImplementedError"):
        with exercise("Cos.backward"):
            stub()
    with pytest.raises(AssertionError, match=r"^Cos.backward: values differ"):
        with exercise("Cos.backward"):
            raise AssertionError("values differ")
    with pytest.raises(ValueError, match="shapes"):
        with exercise("Cos.backward"):
            raise ValueError("shapes do not align")
    with exercise("Cos.backward"):
        pass
    assert capsys.readouterr().out == "Cos.backward: correct\n"
