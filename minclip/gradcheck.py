"""Finite-difference gradient checking (after Chainer's `check_backward`).

The output y = fn(*inputs) is reduced to a scalar with a fixed random
projection L = sum(y * w), so one backward pass gives dL/dx for every input.
Each element is compared with the central difference
(L(x + eps) - L(x - eps)) / (2 eps). For big blocks (the whole CLIP loss) that
would take 2N forward passes, so above `max_elements` the check instead moves
all inputs at once along random unit directions r and compares
(L(x + eps r) - L(x - eps r)) / (2 eps) with sum(grad * r): two passes each.
All of it in float64: float32 round-off swamps the differences.
"""
from contextlib import contextmanager

import numpy as np

from . import backend
from .autograd import Tensor


class GradcheckError(AssertionError):
    pass


def gradcheck(fn, inputs, params=(), eps=1e-6, atol=1e-6, rtol=1e-4, max_elements=4000,
              n_directions=3, seed=0):
    """Check the backward pass of `fn` against central differences.

    fn: callable taking `inputs` and returning a Tensor (any shape).
    inputs: Tensors (float64 with requires_grad=True are checked; integer ones,
        such as labels or token ids, are passed through and must get no grad).
    params: further tensors `fn` uses internally (a layer's parameters) to check.
    Returns True, or raises GradcheckError naming the worst element.
    """
    tensors = [t for t in list(inputs) + list(params) if isinstance(t, Tensor)]
    checked = [t for t in tensors if t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input or parameter has requires_grad=True")
    for t in checked:
        if t.dtype != np.float64:
            raise ValueError(f"gradcheck: needs float64 tensors, got {t.dtype} of shape {t.shape}; "
                             "create inputs with dtype=float64 (or use backend.default_dtype(np.float64))")
    rng = np.random.default_rng(seed)

    y = fn(*inputs)
    w = backend.asarray(rng.standard_normal(y.shape), like=y)

    def loss():
        return float((fn(*inputs).data * w).sum())

    _backward(y, w, tensors, checked)
    if sum(t.size for t in checked) <= max_elements:
        _check_elementwise(loss, checked, eps, atol, rtol)
    else:
        _check_directions(loss, checked, rng, n_directions, eps, atol, rtol)
    return True


def _backward(y, w, tensors, checked):
    """Fill `.grad` with d(sum(y * w))/d(tensor) and check that exactly the `checked` tensors got one."""
    for t in tensors:
        t.grad = None
    y.backward(w)
    for t in tensors:
        if not t.requires_grad and t.grad is not None:
            raise GradcheckError(f"gradcheck: a tensor without requires_grad (shape {t.shape}, "
                                 f"dtype {t.dtype}) received a gradient")
    for i, t in enumerate(checked):
        if t.grad is None:
            raise GradcheckError(f"gradcheck: tensor #{i} (shape {t.shape}) received no gradient")
        if t.grad.shape != t.shape:
            raise GradcheckError(f"gradcheck: tensor #{i} has shape {t.shape} but its grad {t.grad.shape}")


def _check_elementwise(loss, checked, eps, atol, rtol):
    """Every element of every tensor: 2 forward passes each."""
    for i, t in enumerate(checked):
        num = np.zeros(t.shape)
        for idx in np.ndindex(*t.shape):
            old = float(t.data[idx])
            t.data[idx] = old + eps
            up = loss()
            t.data[idx] = old - eps
            down = loss()
            t.data[idx] = old
            num[idx] = (up - down) / (2 * eps)
        _compare(backend.to_numpy(t.grad), num, atol, rtol, f"tensor #{i} (shape {t.shape})")


def _check_directions(loss, checked, rng, n_directions, eps, atol, rtol):
    """All tensors moved at once along `n_directions` random unit directions r: 2 forward passes each."""
    for k in range(n_directions):
        rs = [rng.standard_normal(t.shape) for t in checked]
        norm = np.sqrt(sum((r * r).sum() for r in rs))
        rs = [backend.asarray(r / norm, like=t) for r, t in zip(rs, checked)]
        base = [t.data.copy() for t in checked]
        for t, b, r in zip(checked, base, rs):
            t.data[...] = b + eps * r
        up = loss()
        for t, b, r in zip(checked, base, rs):
            t.data[...] = b - eps * r
        down = loss()
        for t, b in zip(checked, base):
            t.data[...] = b
        num = (up - down) / (2 * eps)
        ana = float(sum((t.grad * r).sum() for t, r in zip(checked, rs)))
        _compare(np.array([ana]), np.array([num]), atol, rtol, f"direction #{k} over all {len(checked)} tensors")


def _compare(analytic, numeric, atol, rtol, what):
    err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
    if (err > 0).any() or not np.isfinite(analytic).all() or not np.isfinite(numeric).all():
        i = np.unravel_index(np.nanargmax(np.where(np.isfinite(err), err, np.inf)), err.shape)
        raise GradcheckError(
            f"gradcheck failed for {what} at index {tuple(int(j) for j in i)}: analytic {analytic[i]:.8g}, "
            f"numeric {numeric[i]:.8g}, |diff| {abs(analytic[i] - numeric[i]):.3g} > "
            f"atol {atol:g} + rtol {rtol:g} * |numeric|")


# ----------------------------------------------------------------------------- for graded exercises
@contextmanager
def exercise(what):
    """The check cell of a notebook exercise: `with exercise("Cos.backward"): check_grad(...)`.

    An answer not written yet (the stub's NotImplementedError) and a wrong one (an AssertionError from
    the checks) both leave as one AssertionError that names the exercise, so a notebook run stops at the
    first unsolved exercise with a sentence saying which and what is wrong; a right one prints so.
    """
    try:
        yield
    except NotImplementedError:
        raise AssertionError(f"{what}: not written yet; replace `raise NotImplementedError()` in the cell "
                             "above with your code") from None
    except AssertionError as e:
        raise AssertionError(f"{what}: {e}") from None
    print(f"{what}: correct")


def check_grad(what, fn, inputs):
    """gradcheck with a message for people: which function, and the worst element (an AssertionError,
    as nbgrader's test cells expect)."""
    try:
        gradcheck(fn, inputs)
    except GradcheckError as e:
        raise AssertionError(f"{what}: the backward disagrees with central differences: {e}") from None


def check_close(what, got, want, tol=1e-10):
    """Assert that `got` has `want`'s shape and values (max abs difference <= tol), naming `what`."""
    got, want = backend.to_numpy(backend.unwrap(got)), backend.to_numpy(backend.unwrap(want))
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    err = float(np.abs(got - want).max()) if got.size else 0.0
    assert err <= tol, f"{what}: values differ from minclip's by up to {err:.3g} (tolerance {tol})"
