# %% [markdown]
# # a03 · LayerNorm forward and backward
#
# Every residual block of CLIP's Transformers normalises its input (Ba et al. 2016), and the ViT adds
# "an additional layer normalization to the combined patch and position embeddings before the
# transformer" (section 2.4). Over the last axis of size $D$:
# $$\mu = \frac1D\sum_i x_i,\quad \sigma^2 = \frac1D\sum_i (x_i-\mu)^2,\quad
# \hat x = \frac{x-\mu}{\sqrt{\sigma^2+\epsilon}},\quad y = w \odot \hat x + b.$$
# With $\bar{\hat x} = g \odot w$ and $r = 1/\sqrt{\sigma^2+\epsilon}$ the backward is
# $$\bar x = r\left(\bar{\hat x} - \operatorname{mean}(\bar{\hat x}) - \hat x \operatorname{mean}(\bar{\hat x}\odot\hat x)\right),
# \qquad \bar w = \textstyle\sum_{\text{rows}} g\odot\hat x,\qquad \bar b = \sum_{\text{rows}} g.$$
# The two means are the gradient flowing through $\mu$ and through $\sigma^2$.

# %% setup
import numpy as np

from minclip import Function, Tensor, backend, gradcheck
from minclip import functional as F
from minclip.autograd import sum_to
from minclip.gradcheck import check_close, check_grad

rng = np.random.default_rng(0)


def randn(*shape):
    """A float64 Tensor of standard-normal numbers that requires grad (gradcheck needs float64)."""
    return Tensor(backend.asarray(rng.standard_normal(shape)), requires_grad=True)

# %% [markdown]
# ## `LayerNorm` (6 points)
# Note the *biased* variance ($\frac1D$, NumPy's default `ddof=0`), as in PyTorch and OpenAI's CLIP.
# Use `sum_to(..., w.shape)` for the gain and bias: `x` may have any number of leading axes.

# %% solution a03-layernorm
class LayerNorm(Function):
    """x (..., D), w (D,), b (D,) -> y (..., D), normalised over the last axis."""
    def __init__(self, eps=1e-5):
        self.eps = eps

    def forward(self, x, w, b):
        ### BEGIN SOLUTION
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        self.rstd = 1 / np.sqrt(var + self.eps)
        self.xhat, self.w = (x - mu) * self.rstd, w
        return self.xhat * w + b
        ### END SOLUTION

    def backward(self, g):
        """g (..., D) -> (dL/dx (..., D), dL/dw (D,), dL/db (D,))."""
        ### BEGIN SOLUTION
        xhat = self.xhat
        gxhat = g * self.w
        gx = self.rstd * (gxhat - gxhat.mean(-1, keepdims=True) - xhat * (gxhat * xhat).mean(-1, keepdims=True))
        return gx, sum_to(g * xhat, self.w.shape), sum_to(g, self.w.shape)
        ### END SOLUTION

# %% test a03-forward 2
x, w, b = randn(3, 5), randn(5), randn(5)
check_close("LayerNorm forward", LayerNorm()(x, w, b), F.layer_norm(x, w, b))
### BEGIN HIDDEN TESTS
x3 = randn(2, 3, 4)
check_close("LayerNorm forward on (2, 3, 4)", LayerNorm()(x3, w[:4], b[:4]), F.layer_norm(x3, w[:4], b[:4]))
### END HIDDEN TESTS

# %% test a03-backward 4
check_grad("LayerNorm (3, 5): gradients of x, w and b", lambda *t: LayerNorm()(*t), [x, w, b])
### BEGIN HIDDEN TESTS
check_grad("LayerNorm (2, 3, 4) (leading axes summed for w and b)", lambda *t: LayerNorm()(*t),
           [randn(2, 3, 4), randn(4), randn(4)])
### END HIDDEN TESTS

# %% [markdown]
# ## What you learned
# Normalisation couples every element of a row, so the gradient has two correction terms, one per
# statistic. minclip's `LayerNorm` in `minclip/functional.py` computes the same formula with in-place
# updates and matrix-vector products for speed; try timing yours against it on a (256, 512) input.
