# %% [markdown]
# # a07 · Figure 3: CLIP's contrastive loss
#
# "Given a batch of $N$ (image, text) pairs, CLIP is trained to predict which of the $N \times N$ possible
# (image, text) pairings across a batch actually occurred ... maximize the cosine similarity of the image
# and text embeddings of the $N$ real pairs in the batch while minimizing the cosine similarity of the
# embeddings of the $N^2 - N$ incorrect pairings" (section 2.3). Figure 3's pseudocode:
#
# ```
# I_e = l2_normalize(np.dot(I_f, W_i), axis=1)
# T_e = l2_normalize(np.dot(T_f, W_t), axis=1)
# logits = np.dot(I_e, T_e.T) * np.exp(t)
# labels = np.arange(n)
# loss_i = cross_entropy_loss(logits, labels, axis=0)
# loss_t = cross_entropy_loss(logits, labels, axis=1)
# loss = (loss_i + loss_t)/2
# ```
# Here the projections are already applied: you get the embeddings $(n, d_e)$ and the log-temperature $t$.
# `axis=1` means a softmax over each row (an image against all texts), `axis=0` over each column.

# %% setup
import numpy as np

from minclip import Tensor, backend, gradcheck
from minclip import functional as F
from minclip.gradcheck import check_close, check_grad
from minclip.loss import clip_loss as minclip_clip_loss

rng = np.random.default_rng(0)


def randn(*shape):
    """A float64 Tensor of standard-normal numbers that requires grad (gradcheck needs float64)."""
    return Tensor(backend.asarray(rng.standard_normal(shape)), requires_grad=True)

# %% [markdown]
# ## 1. `l2_normalize` with Tensor ops (2 points)
# $\hat x = x / \lVert x \rVert_2$ row by row: `(x * x).sum(axis=1, keepdims=True).sqrt()`.

# %% solution a07-normalize
def l2_normalize(x):
    """x (n, d) Tensor -> rows of unit length (n, d)."""
    ### BEGIN SOLUTION
    return x / (x * x).sum(axis=1, keepdims=True).sqrt()
    ### END SOLUTION

# %% test a07-normalize-test 2
x = randn(4, 3)
check_close("l2_normalize", l2_normalize(x), F.l2_normalize(x, axis=1))
check_grad("l2_normalize", l2_normalize, [x])

# %% [markdown]
# ## 2. The symmetric loss (4 points)
# `F.cross_entropy(logits, labels)` normalises rows; for `axis=0` give it `logits.T`. Labels are
# `np.arange(n)`: the $i$-th image belongs with the $i$-th text.

# %% solution a07-loss
def clip_loss(image_features, text_features, t):
    """image_features, text_features (n, d_e) Tensors, t a 0-d Tensor (log inverse temperature) -> scalar."""
    ### BEGIN SOLUTION
    n = image_features.shape[0]
    I_e, T_e = l2_normalize(image_features), l2_normalize(text_features)
    logits = (I_e @ T_e.T) * t.exp()                         # (n, n)
    labels = backend.asarray(np.arange(n))
    loss_i = F.cross_entropy(logits.T, labels)               # axis=0: each text against all images
    loss_t = F.cross_entropy(logits, labels)                 # axis=1: each image against all texts
    loss = (loss_i + loss_t) / 2
    return loss
    ### END SOLUTION

# %% test a07-loss-test 4
I_f, T_f = randn(5, 4), randn(5, 4)
t = Tensor(backend.asarray(np.array(np.log(1 / 0.07))), requires_grad=True)  # CLIP's initial temperature
check_close("clip_loss", clip_loss(I_f, T_f, t), minclip_clip_loss(I_f, T_f, t))
check_grad("clip_loss (gradients of both feature sets and t)", clip_loss, [I_f, T_f, t])
### BEGIN HIDDEN TESTS
A = randn(3, 6)
check_close("clip_loss with the two feature sets swapped", clip_loss(T_f, I_f, t),
            minclip_clip_loss(T_f, I_f, t))
check_close("clip_loss with identical features (n=3)", clip_loss(A, A, t), minclip_clip_loss(A, A, t))
### END HIDDEN TESTS

# %% [markdown]
# ## What you learned
# The loss is two classifiers sharing one similarity matrix: images choosing among texts and texts among
# images. minclip's `clip_loss` (`minclip/loss.py`) has Figure 3's lines as comments beside the code, and
# clamps $e^t$ at 100 as the paper does ("to prevent scaling the logits by more than 100", section 2.5).
