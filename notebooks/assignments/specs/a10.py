# %% [markdown]
# # a10 · A zero-shot classifier with prompt ensembling
#
# CLIP classifies without training a classifier: "we compute the feature embedding of the image and the
# feature embedding of the set of possible texts by their respective encoders", and the class whose text
# is most similar wins (section 3.1.2). Prompts help: "A photo of a {label}." beats the bare label, and
# "ensembling over multiple zero-shot classifiers ... We construct the ensemble over the embedding space
# instead of probability space" (section 3.1.4). For class $c$ and templates $T$:
# $$w_c = \operatorname{normalize}\Big(\frac{1}{|T|}\sum_{\tau\in T} \operatorname{normalize}\big(\mathrm{encode\_text}(\tau(c))\big)\Big),
# \qquad \text{prediction}(x) = \arg\max_c\; \operatorname{normalize}(f(x))\cdot w_c .$$

# %% setup
import numpy as np

from minclip import Tensor, backend, gradcheck, no_grad
from minclip.evaluate import zero_shot_classifier
from minclip.gradcheck import check_close, check_grad
from minclip.model import CLIP
from minclip.tokenizer import tokenizer_for

rng = np.random.default_rng(0)


def randn(*shape):
    """A float64 Tensor of standard-normal numbers that requires grad (gradcheck needs float64)."""
    return Tensor(backend.asarray(rng.standard_normal(shape)), requires_grad=True)


model = CLIP(embed_dim=8, image_resolution=16, vision_layers=1, vision_width=64, vision_patch_size=8,
             context_length=16, vocab_size=1024, transformer_width=16, transformer_heads=2, transformer_layers=1)
tokenizer = tokenizer_for(model.vocab_size)  # a model without its own merges: the Shapes ones


def tokenize_fn(texts):
    return tokenizer(texts, context_length=model.context_length)


def encode_text(texts):
    """list of n strings -> NumPy float64 (n, D) text features from a small random CLIP."""
    with no_grad():
        return backend.to_numpy(model.encode_text(backend.asarray(tokenize_fn(texts))).data).astype(np.float64)


def normalize(a):
    """Rows of a NumPy array scaled to unit length."""
    return a / np.linalg.norm(a, axis=-1, keepdims=True)

# %% [markdown]
# ## 1. The ensembled class embeddings (4 points)
# Format every template with every class name (`template.format(name)`), encode, normalise each text
# embedding, average over the templates of a class, and normalise again. Return shape $(D, C)$, so that
# image features $(N, D)$ `@` it gives the logits $(N, C)$.

# %% solution a10-weights
def zero_shot_weights(classnames, templates):
    """C class names, T templates with one "{}" -> NumPy (D, C) unit-length columns."""
    ### BEGIN SOLUTION
    texts = [t.format(c) for c in classnames for t in templates]        # class-major: (C*T,)
    emb = normalize(encode_text(texts))                                 # (C*T, D)
    emb = emb.reshape(len(classnames), len(templates), -1)              # (C, T, D)
    emb = normalize(emb.mean(axis=1))
    return emb.T                                                        # (D, C)
    ### END SOLUTION

# %% test a10-weights-test 4
classes = ["circle", "square", "triangle"]
templates = ["a photo of a {}.", "a drawing of a {}.", "a small {}."]
W = zero_shot_weights(classes, templates)
assert W.shape == (8, 3), f"zero_shot_weights gives shape {W.shape}, expected (D, C) = (8, 3)"
check_close("zero-shot weights", W, zero_shot_classifier(model, classes, templates, tokenize_fn), tol=1e-5)
### BEGIN HIDDEN TESTS
W1 = zero_shot_weights(["red", "blue"], ["{}"])
check_close("zero-shot weights with one template", W1,
            zero_shot_classifier(model, ["red", "blue"], ["{}"], tokenize_fn), tol=1e-5)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Predict (2 points)

# %% solution a10-predict
def predict(image_features, W):
    """image_features (N, D) NumPy, W (D, C) -> (N,) int class indices."""
    ### BEGIN SOLUTION
    return (normalize(image_features) @ W).argmax(axis=1)
    ### END SOLUTION

# %% test a10-predict-test 2
feats = rng.standard_normal((6, 8))
want = (normalize(feats) @ W).argmax(axis=1)
got = np.asarray(predict(feats, W))
assert got.shape == (6,) and (got == want).all(), f"predict gives {got}, expected {want}"
scaled = feats * np.array([[1], [100], [1], [0.01], [1], [1]])
assert (np.asarray(predict(scaled, W)) == want).all(), "predict must not depend on the length of an image feature"

# %% [markdown]
# ## What you learned
# A zero-shot classifier is a matrix of text embeddings, computed once; ensembling averages in embedding
# space, so it costs nothing per image. minclip's `zero_shot_classifier` (`minclip/evaluate.py`) does the
# same in batches; notebook 09 runs it on a trained model.
