"""The pre-training objectives of Figure 2, each on the same image encoder.

Radford et al. 2021, Section 2.3: "Our initial approach, similar to VirTex, jointly trained an image CNN
and text transformer from scratch to predict the caption of an image." That Transformer language model
learnt to recognise ImageNet classes "three times slower than a much simpler baseline that predicts a
bag-of-words encoding of the same text". Then: "we swapped the predictive objective for a contrastive
objective in Figure 2 and observed a further 4x efficiency improvement in the rate of zero-shot transfer".

The four models of that comparison, each built around an image encoder from model.build_visual:

    (a) CaptionLM          predict the caption's tokens one by one, given the image
    (b) BagOfWords         predict which words the caption holds, in any order
    (c) ContrastiveBoW     Figure 3's contrastive loss with a bag-of-words text encoder ("CBOW")
    (d) CLIP (model.py)    Figure 3's contrastive loss with the Transformer text encoder

Each has .loss(images, tokens) -> scalar Tensor (for CLIP: clip_objective(model, images, tokens)).
(a) and (b) have no text embedding to compare with, so they classify zero-shot by likelihood: the class
whose prompts are most probable given the image wins (likelihood_scores); (c) and (d) by cosine
similarity, as evaluate.zero_shot_classifier does.

Token layout, as everywhere in minclip: tokens (N, L) hold SOT, the words, EOT (the largest id in its
row), then zeros. The "words" of a caption are the tokens strictly between SOT and EOT.
"""
import numpy as np

from . import backend, nn
from . import functional as F
from .autograd import Tensor, concat, no_grad
from .loss import clip_loss
from .model import encode_image, initial_logit_scale
from .transformer import Transformer


def _host_tokens(tokens):
    tokens = backend.to_numpy(backend.unwrap(tokens))
    if tokens.ndim != 2 or tokens.dtype.kind not in "iu" or tokens.shape[1] < 2:
        raise ValueError(f"expected integer token ids of shape (N, L) with L >= 2 (SOT ... EOT), got "
                         f"{tokens.dtype} {tokens.shape}")
    return tokens


def word_mask(tokens):
    """float32 (N, L): 1 at the words of each caption (after SOT, before EOT), 0 elsewhere."""
    tokens = _host_tokens(tokens)
    eot = tokens.argmax(axis=1)                                   # EOT is the largest id in its row
    pos = np.arange(tokens.shape[1])
    return ((pos[None, :] >= 1) & (pos[None, :] < eot[:, None])).astype(np.float32)


def predicted_mask(tokens):
    """float32 (N, L-1): 1 where token j+1 is one a language model predicts (a word or the EOT),
    0 at the padding after it; column j is the prediction made after reading tokens 0..j."""
    tokens = _host_tokens(tokens)
    return (np.arange(1, tokens.shape[1])[None, :] <= tokens.argmax(axis=1)[:, None]).astype(np.float32)


def bag_of_words(tokens, vocab_size):
    """float32 (N, vocab_size): how many times each id occurs among each caption's words."""
    tokens = _host_tokens(tokens)
    if tokens.max() >= vocab_size:
        raise ValueError(f"bag_of_words: token id {int(tokens.max())} is out of range for {vocab_size} ids")
    counts = np.zeros((tokens.shape[0], vocab_size), np.float32)
    rows = np.broadcast_to(np.arange(tokens.shape[0])[:, None], tokens.shape)
    np.add.at(counts, (rows, tokens), word_mask(tokens))          # add.at: a word may repeat
    return counts


def clip_objective(model, images, tokens):
    """(c), (d): Figure 3's symmetric contrastive loss of a model with encode_image, encode_text and
    logit_scale (CLIP or ContrastiveBoW)."""
    return clip_loss(model.encode_image(images), model.encode_text(tokens), model.logit_scale)


# ----------------------------------------------------------------------------- (a) the captioning model
class CaptionLM(nn.Module):
    """(a) An image-conditioned Transformer language model: p(caption | image) = prod_j p(t_j | image, t_<j).

    The image's features, projected to the decoder's width, are the first position of a GPT-2 style causal
    Transformer (the blocks of the text encoder); the caption's tokens follow. The output at each position
    predicts the next token, so every word and the EOT are predicted, each seeing the image and the words
    before it. (VirTex cross-attends to the image's feature grid; one prefix token is the simplest
    conditioning, and the paper's point, that predicting the exact words is slow to learn from, is about
    the objective, not how the decoder sees the image.)

    visual: an image encoder (N, 3, R, R) -> (N, embed_dim); context_length: the longest caption
    (SOT and EOT included); width, heads, layers: the decoder.
    """
    def __init__(self, visual, embed_dim, context_length, vocab_size, width, heads, layers):
        self.visual = visual
        self.context_length, self.vocab_size = context_length, vocab_size
        self.image_prefix = nn.Linear(embed_dim, width)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(backend.randn(context_length, width, std=0.01))
        self.transformer = Transformer(width, layers, heads,
                                       attn_mask=F.causal_mask(context_length, dtype=backend.get_default_dtype()))
        self.ln_final = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)                 # next-token logits
        self.tokenizer = None

    def encode_image(self, image):
        return encode_image(self.visual, image)

    def next_token_log_probs(self, image_features, tokens):
        """image_features (N, embed_dim) Tensor, tokens (N, L) -> (N, L-1, vocab_size) Tensor:
        [:, j] is log p(token j+1 | image, tokens 0..j)."""
        tokens = _host_tokens(tokens)
        N, L = tokens.shape
        if L > self.context_length:
            raise ValueError(f"CaptionLM: captions of {L} tokens but context_length is {self.context_length}")
        prefix = self.image_prefix(image_features).reshape(N, 1, -1)        # (N, 1, width): the image
        x = concat([prefix, self.token_embedding(tokens[:, :-1])], axis=1)  # (N, L, width): image, SOT, words
        x = self.transformer(x + self.positional_embedding[:L])
        x = self.ln_final(x[:, 1:])                                           # (N, L-1, width): after SOT ...
        return F.log_softmax(self.head(x), axis=-1)                           # ... predicts tokens 1 .. L-1

    def log_likelihood(self, image_features, tokens):
        """(N,) Tensor: log p(caption | image), the sum over its words and EOT."""
        tokens = _host_tokens(tokens)
        N, L = tokens.shape
        logp = self.next_token_log_probs(image_features, tokens)             # (N, L-1, V)
        rows, cols = np.meshgrid(np.arange(N), np.arange(L - 1), indexing="ij")
        index = tuple(backend.asarray(i, like=logp.data) for i in (rows, cols, tokens[:, 1:]))
        picked = logp[index]                                                 # (N, L-1): log p of each target
        targets = predicted_mask(tokens)
        return (picked * backend.asarray(targets, dtype=picked.dtype, like=picked.data)).sum(axis=1)

    def loss(self, images, tokens):
        """Mean cross-entropy per predicted token (words and EOT) over the batch."""
        tokens = _host_tokens(tokens)
        n_targets = float(predicted_mask(tokens).sum())
        return -self.log_likelihood(self.encode_image(images), tokens).sum() / n_targets


# ----------------------------------------------------------------------------- (b) bag-of-words prediction
class BagOfWords(nn.Module):
    """(b) Predict the caption's bag of words from the image: one softmax over the vocabulary, trained
    with cross-entropy against the caption's normalised word counts (a multi-label target, as in Joulin
    et al. 2016's image-to-words models). p(caption | image) = prod over its words of p(word | image).

    visual: an image encoder (N, 3, R, R) -> (N, embed_dim).
    """
    def __init__(self, visual, embed_dim, vocab_size):
        self.visual, self.vocab_size = visual, vocab_size
        self.head = nn.Linear(embed_dim, vocab_size)
        self.tokenizer = None

    def encode_image(self, image):
        return encode_image(self.visual, image)

    def word_log_probs(self, image_features):
        """(N, embed_dim) Tensor -> (N, vocab_size) Tensor of log p(word | image)."""
        return F.log_softmax(self.head(image_features), axis=-1)

    def log_likelihood(self, image_features, tokens):
        """(N,) Tensor: the sum of log p(word | image) over each caption's words (order ignored)."""
        logp = self.word_log_probs(image_features)
        counts = backend.asarray(bag_of_words(tokens, self.vocab_size), dtype=logp.dtype, like=logp.data)
        return (logp * counts).sum(axis=1)

    def loss(self, images, tokens):
        """Mean over the batch of the cross-entropy between the normalised bag and p(word | image)."""
        counts = bag_of_words(tokens, self.vocab_size)
        target = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)   # each row sums to 1
        logp = self.word_log_probs(self.encode_image(images))
        return -(logp * backend.asarray(target, dtype=logp.dtype, like=logp.data)).sum(axis=1).mean()


# ----------------------------------------------------------------------------- (c) bag-of-words contrastive
class BagOfWordsText(nn.Module):
    """Figure 3's "CBOW" text encoder: the mean of the caption's word embeddings, projected.
    forward(tokens (N, L)) -> (N, embed_dim). Word order is invisible to it."""
    def __init__(self, vocab_size, width, embed_dim):
        self.token_embedding = nn.Embedding(vocab_size, width)
        nn.normal_(self.token_embedding.weight, std=0.02)
        self.text_projection = nn.Parameter(backend.randn(width, embed_dim, std=width ** -0.5))

    def forward(self, tokens):
        tokens = _host_tokens(tokens)
        mask = word_mask(tokens)
        mask /= np.maximum(mask.sum(axis=1, keepdims=True), 1)               # mean over the words
        x = self.token_embedding(tokens)                                     # (N, L, width)
        x = (x * backend.asarray(mask[:, :, None], dtype=x.dtype, like=x.data)).sum(axis=1)  # (N, width)
        return x @ self.text_projection                                      # (N, embed_dim)


class ContrastiveBoW(nn.Module):
    """(c) CLIP with the bag-of-words text encoder: the image encoder, BagOfWordsText and a learnt
    temperature, trained with Figure 3's loss. Has encode_image, encode_text, logit_scale, context_length
    and vocab_size, so evaluate.zero_shot_classifier works on it as on CLIP."""
    def __init__(self, visual, embed_dim, context_length, vocab_size, width):
        self.visual, self.context_length, self.vocab_size = visual, context_length, vocab_size
        self.text = BagOfWordsText(vocab_size, width, embed_dim)
        self.logit_scale = initial_logit_scale()
        self.tokenizer = None

    def encode_image(self, image):
        return encode_image(self.visual, image)

    def encode_text(self, tokens):
        return self.text(tokens)

    def loss(self, images, tokens):
        return clip_objective(self, images, tokens)


# ----------------------------------------------------------------------------- zero-shot by likelihood
def likelihood_scores(model, image_features, prompt_tokens, templates_per_class, batch_size=4096):
    """Zero-shot class scores of a generative model (CaptionLM or BagOfWords), NumPy float32 (N, C).

    image_features: (N, embed_dim) array from model.encode_image; prompt_tokens: (C * T, L), class-major
    (the T prompts of class 0, then class 1, ...). score[n, c] = log mean_t p(prompt_{c,t} | image n):
    the likelihood of the class under a uniform choice of template. The log-sum-exp keeps the best
    fitting templates, e.g. "a red {}" for a red image, as averaging embeddings does for CLIP (Sec. 3.1.4).
    """
    prompt_tokens = _host_tokens(prompt_tokens)
    feats = backend.unwrap(image_features)
    N, P, T = feats.shape[0], len(prompt_tokens), templates_per_class
    if P % T:
        raise ValueError(f"likelihood_scores: {P} prompts is not a whole number of classes of {T} templates")
    ll = np.empty((N, P), np.float32)
    with no_grad():
        if isinstance(model, BagOfWords):  # words are independent given the image: one matrix product
            logp = backend.to_numpy(model.word_log_probs(Tensor(feats)).data)
            ll[:] = logp @ bag_of_words(prompt_tokens, model.vocab_size).T
        else:  # every (image, prompt) pair through the decoder, in chunks of images
            step = max(1, batch_size // P)
            for i in range(0, N, step):
                f = feats[i:i + step]
                n = f.shape[0]
                rows = backend.asarray(np.repeat(np.arange(n), P), like=f)
                pairs = Tensor(f[rows])                                       # image-major: (n * P, D)
                out = model.log_likelihood(pairs, np.tile(prompt_tokens, (n, 1)))
                ll[i:i + n] = backend.to_numpy(out.data).reshape(n, P)
    ll = ll.reshape(N, P // T, T)
    top = ll.max(axis=2, keepdims=True)
    return (top[:, :, 0] + np.log(np.exp(ll - top).mean(axis=2))).astype(np.float32)


__all__ = ["BagOfWords", "BagOfWordsText", "CaptionLM", "ContrastiveBoW", "bag_of_words", "clip_objective",
           "likelihood_scores", "predicted_mask", "word_mask"]
