# %% [markdown]
# # a06 · The ViT patch embedding and the class token
#
# CLIP's Vision Transformer (section 2.4, after Dosovitskiy et al. 2020) cuts an image of $R\times R$
# pixels into $(R/P)^2$ patches of $P\times P$, embeds each one linearly, prepends a learned **class
# token**, adds a learned **position embedding**, and later reads the image feature at the class token.
# `VisionTransformer.forward` in `minclip/transformer.py` begins with exactly these steps:
# $$z_0 = [\,x_\text{class};\; x_p^1 E;\; \dots;\; x_p^{G^2} E\,] + E_\text{pos},\qquad
# E \in \mathbb{R}^{(3P^2)\times D},\; E_\text{pos} \in \mathbb{R}^{(G^2+1)\times D},\; G = R/P.$$

# %% setup
import numpy as np

from minclip import Tensor, backend, concat, gradcheck
from minclip import functional as F
from minclip.gradcheck import check_close, check_grad
from minclip.transformer import VisionTransformer

rng = np.random.default_rng(0)


def randn(*shape):
    """A float64 Tensor of standard-normal numbers that requires grad (gradcheck needs float64)."""
    return Tensor(backend.asarray(rng.standard_normal(shape)), requires_grad=True)

# %% [markdown]
# ## 1. Cut an image into patches (2 points)
# Patch $(g_y, g_x)$ of image $n$ is `x[n, :, gy*P:(gy+1)*P, gx*P:(gx+1)*P]`, flattened in the order
# (channel, row, column) and placed at position $g_y G + g_x$. Two reshapes and one transpose do it
# (write them on the Tensor, so gradients flow).

# %% solution a06-patchify
def patchify(x, P):
    """x (N, C, R, R) Tensor -> (N, G*G, C*P*P), where G = R/P patches fit along each side."""
    ### BEGIN SOLUTION
    N, C, R, _ = x.shape
    G = R // P
    x = x.reshape(N, C, G, P, G, P)                 # (N, C, gy, py, gx, px)
    x = x.transpose(0, 2, 4, 1, 3, 5)               # (N, gy, gx, C, py, px)
    return x.reshape(N, G * G, C * P * P)
    ### END SOLUTION

# %% test a06-patchify-test 2
x = randn(2, 3, 8, 8)
p = patchify(x, 4)
assert p.shape == (2, 4, 48), f"patchify of (2, 3, 8, 8) with P=4 gives {p.shape}, expected (2, 4, 48)"
check_close("patch 1 of image 0 (top-right)", p[0, 1], x[0, :, 0:4, 4:8].reshape(48))
# The stride-P convolution of the ViT (conv1) is the same linear map applied to each flattened patch.
w = randn(5, 3, 4, 4)
check_close("patches @ E equals the stride-P convolution", patchify(x, 4) @ w.reshape(5, 48).T,
            F.conv2d(x, w, stride=4).reshape(2, 5, 4).transpose(0, 2, 1))

# %% [markdown]
# ## 2. Embed: class token first, then the patches, plus positions (4 points)
# `model.conv1.weight` is $(D, 3, P, P)$. Give every image its own copy of the class token, shape
# $(N, 1, D)$ (adding `np.zeros((N, 1, D))` broadcasts it), and join with `concat([...], axis=1)`.

# %% solution a06-embed
def embed(model, x):
    """model: a minclip VisionTransformer; x (N, 3, R, R) -> z0 (N, G*G + 1, D), before ln_pre."""
    ### BEGIN SOLUTION
    D, _, P, _ = model.conv1.weight.shape
    N = x.shape[0]
    patches = patchify(x, P) @ model.conv1.weight.reshape(D, -1).T      # (N, G*G, D)
    cls = model.class_embedding + np.zeros((N, 1, D))                   # (N, 1, D)
    return concat([cls, patches], axis=1) + model.positional_embedding  # (N, G*G + 1, D)
    ### END SOLUTION

# %% test a06-embed-test 4
with backend.default_dtype(np.float64):
    vit = VisionTransformer(input_resolution=8, patch_size=4, width=6, layers=1, heads=2, output_dim=3)
img = randn(2, 3, 8, 8)
z0 = embed(vit, img)
assert z0.shape == (2, 5, 6), f"embed gives {z0.shape}, expected (N, G*G + 1, D) = (2, 5, 6)"
# Run the rest of minclip's ViT on your embedding: it must give the model's own image features.
h = vit.transformer(vit.ln_pre(z0))
check_close("the ViT's output computed from your embedding", vit.ln_post(h[:, 0, :]) @ vit.proj, vit(img))
### BEGIN HIDDEN TESTS
check_grad("embed (gradient of the image)", lambda t: embed(vit, t), [randn(1, 3, 8, 8)])
### END HIDDEN TESTS

# %% [markdown]
# ## What you learned
# A patch embedding is a linear layer on flattened patches, written as a convolution with stride $P$.
# The class token is a learned vector prepended to every sequence; after the Transformer its output
# alone becomes the image feature (`ln_post(x[:, 0, :]) @ proj`).
