# %% [markdown]
# # a04 · Scaled dot-product attention with a causal mask
#
# Attention (Vaswani et al. 2017): $\mathrm{Attention}(Q,K,V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt d} + M\right)V$.
# CLIP's text encoder is a Transformer where "masked self-attention was used in the text encoder to
# preserve the ability to initialize with a pre-trained language model" (section 2.4): token $i$ may look
# at tokens $j \le i$ only. The additive mask $M$ is $0$ on and below the diagonal and $-\infty$ above
# it, so those scores become $e^{-\infty} = 0$ after the softmax.
#
# Here you build attention from minclip's Tensor operations; minclip's autograd differentiates it.

# %% setup
import math

import numpy as np

from minclip import Tensor, backend, gradcheck
from minclip import functional as F
from minclip.gradcheck import check_close, check_grad

rng = np.random.default_rng(0)


def randn(*shape):
    """A float64 Tensor of standard-normal numbers that requires grad (gradcheck needs float64)."""
    return Tensor(backend.asarray(rng.standard_normal(shape)), requires_grad=True)

# %% [markdown]
# ## 1. The causal mask (2 points)
# Return a raw float64 NumPy array (not a Tensor) of shape `(n, n)`. `np.triu(..., k=1)` is one way.

# %% solution a04-mask
def causal_mask(n):
    """(n, n) additive mask: 0 where j <= i, -inf where j > i."""
    ### BEGIN SOLUTION
    return np.triu(np.full((n, n), -np.inf), k=1)
    ### END SOLUTION

# %% test a04-mask-test 2
m = causal_mask(4)
assert m.shape == (4, 4), f"causal_mask(4) has shape {m.shape}, expected (4, 4)"
want = backend.to_numpy(F.causal_mask(4, dtype=np.float64))
assert np.array_equal(m, want), f"causal_mask(4) is\n{m}\nexpected 0 on and below the diagonal, -inf above:\n{want}"

# %% [markdown]
# ## 2. Attention (4 points)
# `q`, `k`, `v` are Tensors of shape `(B, L, d)`; `k.transpose(0, 2, 1)` is $K^\top$ per batch, and
# `F.softmax(s, axis=-1)` normalises each query's row. Adding a raw array to a Tensor gives a Tensor.

# %% solution a04-attention
def attention(q, k, v, mask=None):
    """q, k, v (B, L, d) Tensors, mask (L, L) array or None -> (B, L, d)."""
    ### BEGIN SOLUTION
    d = q.shape[-1]
    s = q @ k.transpose(0, 2, 1) / math.sqrt(d)     # (B, L, L)
    if mask is not None:
        s = s + mask
    return F.softmax(s, axis=-1) @ v                # (B, L, d)
    ### END SOLUTION

# %% test a04-attention-test 4
q, k, v = randn(2, 4, 3), randn(2, 4, 3), randn(2, 4, 3)
check_close("attention without a mask", attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
mask = backend.asarray(causal_mask(4))
check_close("attention with the causal mask", attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, mask))
check_grad("attention with the causal mask (gradients of q, k, v)", lambda *t: attention(*t, mask), [q, k, v])
### BEGIN HIDDEN TESTS
q8 = randn(1, 5, 8)
check_close("attention with d=8 (is the scale 1/sqrt(d)?)", attention(q8, q8, q8),
            F.scaled_dot_product_attention(q8, q8, q8))
out = backend.to_numpy(attention(q, k, v, mask).data)
assert np.allclose(out[:, 0], backend.to_numpy(v.data)[:, 0]), \
    "with the causal mask the first token can only attend to itself, so its output must equal v[:, 0]"
### END HIDDEN TESTS

# %% [markdown]
# ## What you learned
# The mask is added before the softmax, not multiplied after it, so each row still sums to one.
# Without the $1/\sqrt d$ the scores grow with $d$ and the softmax saturates. minclip fuses all of this in
# `ScaledDotProductAttention` (`minclip/functional.py`) so the backward reuses the attention weights.
