# %% [markdown]
# # a02 · Softmax and cross-entropy backward
#
# CLIP's loss is a cross-entropy over a softmax (Figure 3; section 2.3: "a symmetric cross entropy loss
# over these similarity scores"). Both are written here as single `Function`s with hand-derived backwards.
#
# **Softmax** along the last axis: $y_i = \dfrac{e^{x_i - m}}{\sum_j e^{x_j - m}}$ with $m = \max_j x_j$
# (subtracting $m$ changes nothing mathematically and keeps $e^{x}$ from overflowing). Its Jacobian is
# $\partial y_i / \partial x_j = y_i(\delta_{ij} - y_j)$, so for an incoming gradient $g$
# $$\bar x = y \odot \left(g - \textstyle\sum_j g_j y_j\right).$$
#
# **Cross-entropy** of logits $X \in \mathbb{R}^{N \times C}$ with integer labels $t$:
# $L = -\frac{1}{N}\sum_n \log \mathrm{softmax}(X_n)_{t_n}$, and
# $$\frac{\partial L}{\partial X} = \frac{1}{N}\left(\mathrm{softmax}(X) - \mathrm{onehot}(t)\right).$$

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
# ## 1. `Softmax` over the last axis (3 points)

# %% solution a02-softmax
class Softmax(Function):
    """x (..., C) -> y (..., C), rows summing to 1."""
    def forward(self, x):
        ### BEGIN SOLUTION
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        self.y = e / e.sum(axis=-1, keepdims=True)
        return self.y
        ### END SOLUTION

    def backward(self, g):
        """g: dL/dy (..., C) -> dL/dx (..., C)."""
        ### BEGIN SOLUTION
        y = self.y
        return y * (g - (g * y).sum(axis=-1, keepdims=True))
        ### END SOLUTION

# %% test a02-softmax-forward 1
x = randn(4, 5)
check_close("Softmax forward", Softmax()(x), F.softmax(x, axis=-1))
big = Tensor(backend.asarray(np.array([[1000.0, 0.0, -1000.0]])))
assert np.isfinite(backend.to_numpy(Softmax()(big).data)).all(), \
    "Softmax of [1000, 0, -1000] is not finite: subtract the row maximum before exp"

# %% test a02-softmax-backward 2
check_grad("Softmax (4, 5)", lambda t: Softmax()(t), [randn(4, 5)])
### BEGIN HIDDEN TESTS
check_grad("Softmax (2, 3, 4) (batched rows)", lambda t: Softmax()(t), [randn(2, 3, 4)])
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Fused `CrossEntropy` (3 points)
# Compute $\log\mathrm{softmax}$ stably as $x - m - \log\sum_j e^{x_j - m}$, pick the label's entry in each row
# (`logp[np.arange(N), labels]`), and average. In backward, `g` is the scalar gradient of the loss.

# %% solution a02-ce
class CrossEntropy(Function):
    """logits (N, C) float -> scalar mean cross-entropy; labels (N,) ints are fixed at construction."""
    def __init__(self, labels):
        self.labels = labels

    def forward(self, logits):
        ### BEGIN SOLUTION
        m = logits.max(axis=1, keepdims=True)
        self.logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
        return -self.logp[np.arange(len(self.labels)), self.labels].mean()
        ### END SOLUTION

    def backward(self, g):
        """g: dL/dloss (a 0-d array) -> dL/dlogits (N, C)."""
        ### BEGIN SOLUTION
        n = len(self.labels)
        gx = np.exp(self.logp)
        gx[np.arange(n), self.labels] -= 1
        gx = gx * g
        return gx / n
        ### END SOLUTION

# %% test a02-ce-forward 1
logits, labels = randn(6, 4), backend.asarray(rng.integers(0, 4, 6))
check_close("CrossEntropy forward", CrossEntropy(labels)(logits), F.cross_entropy(logits, labels))

# %% test a02-ce-backward 2
check_grad("CrossEntropy, N=6, C=4", lambda t: CrossEntropy(labels)(t), [logits])
### BEGIN HIDDEN TESTS
labels2 = backend.asarray(rng.integers(0, 7, 3))
check_grad("CrossEntropy, N=3, C=7", lambda t: CrossEntropy(labels2)(t), [randn(3, 7)])
### END HIDDEN TESTS

# %% [markdown]
# ## What you learned
# The softmax Jacobian never needs to be built: $y \odot (g - \langle g, y\rangle)$ costs as much as the
# forward. Fusing softmax with the log and the label pick turns the backward into "probabilities minus
# one-hot", the gradient behind every classifier and behind CLIP's loss. minclip's versions are
# `Softmax` and `CrossEntropy` in `minclip/functional.py`.
