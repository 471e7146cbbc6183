# %% [markdown]
# # a09 · AdamW with CLIP's no-decay parameter groups
#
# "We use the Adam optimizer (Kingma & Ba, 2014) with decoupled weight decay regularization
# (Loshchilov & Hutter, 2017) applied to all weights that are not gains or biases" (section 2.5).
# One step of AdamW for a parameter $p$ with gradient $g$, at step $t = 1, 2, \dots$:
# $$p \leftarrow p - \eta\lambda p \quad\text{(decoupled: on the weights, not added to } g\text{)}$$
# $$m \leftarrow \beta_1 m + (1-\beta_1) g,\qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2$$
# $$p \leftarrow p - \eta\,\frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}$$
# CLIP's settings: $\beta_1 = 0.9$, $\beta_2 = 0.98$, $\epsilon = 10^{-6}$, $\lambda = 0.2$.

# %% setup
import numpy as np

from minclip import Tensor, backend, gradcheck
from minclip.gradcheck import check_close, check_grad
from minclip.model import CLIP
from minclip.optim import AdamW, param_groups_for_clip

rng = np.random.default_rng(0)


def randn(*shape):
    """A float64 Tensor of standard-normal numbers that requires grad (gradcheck needs float64)."""
    return Tensor(backend.asarray(rng.standard_normal(shape)), requires_grad=True)


TINY = dict(embed_dim=8, image_resolution=16, vision_layers=1, vision_width=64, vision_patch_size=8,
            context_length=8, vocab_size=64, transformer_width=16, transformer_heads=2, transformer_layers=1)

# %% [markdown]
# ## 1. Which parameters are decayed (3 points)
# minclip follows open_clip's rule: **no** decay for a parameter with fewer than 2 dimensions (gains,
# biases, `logit_scale`) or whose name contains `"bn"`, `"ln"`, `"bias"`, `"embedding"` or
# `"logit_scale"` (embeddings are looked up, not multiplied, so shrinking them is not a regulariser).

# %% solution a09-groups
def decays(name, p):
    """True when parameter `p` (a Tensor) called `name` gets weight decay."""
    ### BEGIN SOLUTION
    no_decay = p.ndim < 2 or any(s in name for s in ("bn", "ln", "bias", "embedding", "logit_scale"))
    return not no_decay
    ### END SOLUTION

# %% test a09-groups-test 3
with backend.default_dtype(np.float64):
    model = CLIP(**TINY)
decay_group, no_decay_group = param_groups_for_clip(model, 0.2)
for name, p in model.named_parameters():
    want = name in decay_group["param_names"]
    assert decays(name, p) == want, f"decays({name!r}, shape {p.shape}) is {decays(name, p)}, expected {want}"

# %% [markdown]
# ## 2. One AdamW step (3 points)
# Update `p` (a raw array) **in place** and keep `m`, `v` and the step count `t` in the `state` dict
# (empty at the first step).

# %% solution a09-step
def adamw_step(p, grad, state, lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2):
    """One in-place AdamW update of the array p with gradient grad; state: dict kept between steps."""
    ### BEGIN SOLUTION
    beta1, beta2 = betas
    if not state:
        state.update(t=0, m=np.zeros_like(p), v=np.zeros_like(p))
    state["t"] += 1
    t = state["t"]
    p *= 1 - lr * weight_decay
    state["m"] = beta1 * state["m"] + (1 - beta1) * grad
    state["v"] = beta2 * state["v"] + (1 - beta2) * grad * grad
    m_hat, v_hat = state["m"] / (1 - beta1 ** t), state["v"] / (1 - beta2 ** t)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)
    ### END SOLUTION

# %% test a09-step-test 3
# Three steps on the same parameters with minclip's AdamW and with yours.
w_ref, w_mine = randn(3, 4), randn(3, 4)
w_mine.data[...] = w_ref.data
opt, state = AdamW([w_ref], lr=0.1, weight_decay=0.2), {}
for step in range(3):
    grad = backend.asarray(rng.standard_normal((3, 4)))
    w_ref.grad = grad
    opt.step()
    adamw_step(w_mine.data, grad, state, lr=0.1)
    check_close(f"the parameter after AdamW step {step + 1}", w_mine, w_ref)
### BEGIN HIDDEN TESTS
b_ref, b_mine = randn(5), randn(5)
b_mine.data[...] = b_ref.data
opt, state = AdamW([b_ref], lr=0.01, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.0), {}
for step in range(4):
    grad = backend.asarray(rng.standard_normal(5))
    b_ref.grad = grad
    opt.step()
    adamw_step(b_mine.data, grad, state, lr=0.01, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.0)
check_close("a no-decay parameter after 4 steps with other betas and eps", b_mine, b_ref)
### END HIDDEN TESTS

# %% [markdown]
# ## What you learned
# Decoupled decay shrinks the weights directly; added to the gradient instead (plain Adam with L2) it would
# be divided by $\sqrt v$ and act unevenly across weights. minclip's `param_groups_for_clip` and `AdamW`
# are in `minclip/optim.py`.
