"""The symmetric contrastive loss of CLIP, written as Figure 3 of the paper.

Radford et al. 2021, Figure 3 ("Numpy-like pseudocode for the core of an
implementation of CLIP"):

    # image_encoder - ResNet or Vision Transformer
    # text_encoder  - CBOW or Text Transformer
    # I[n, h, w, c] - minibatch of aligned images
    # T[n, l]       - minibatch of aligned texts
    # W_i[d_i, d_e] - learned proj of image to embed
    # W_t[d_t, d_e] - learned proj of text to embed
    # t             - learned temperature parameter
    # extract feature representations of each modality
    I_f = image_encoder(I) #[n, d_i]
    T_f = text_encoder(T)  #[n, d_t]
    # joint multimodal embedding [n, d_e]
    I_e = l2_normalize(np.dot(I_f, W_i), axis=1)
    T_e = l2_normalize(np.dot(T_f, W_t), axis=1)
    # scaled pairwise cosine similarities [n, n]
    logits = np.dot(I_e, T_e.T) * np.exp(t)
    # symmetric loss function
    labels = np.arange(n)
    loss_i = cross_entropy_loss(logits, labels, axis=0)
    loss_t = cross_entropy_loss(logits, labels, axis=1)
    loss   = (loss_i + loss_t)/2

Each line from I_e on stands as a comment beside the code that implements it in
`clip_loss`; t is the log of the inverse temperature.

In minclip the projections live inside the encoders (`visual.proj` or the attention
pool's `c_proj`, and `text_projection`), so `CLIP.encode_image` and
`CLIP.encode_text` already return np.dot(I_f, W_i) and np.dot(T_f, W_t).
"""
from . import backend
from . import functional as F
from .autograd import Function, Tensor

MAX_LOGIT_SCALE = 100.0  # Section 2.5: the temperature is "clipped to prevent scaling the logits by more than 100"


class _ClampMax(Function):
    """min(x, hi); where the clamp is active the output is a constant, so no gradient flows."""
    def __init__(self, hi):
        self.hi = hi

    def forward(self, x):
        xp = backend.get_array_module(x)
        self.keep = ~(x > self.hi)  # not `x <= hi`: a NaN must pass through (and stop training), not become hi
        return xp.where(self.keep, x, xp.asarray(self.hi, dtype=x.dtype))  # where: stays an array even 0-d

    def backward(self, g):
        return g * self.keep


def _as_scale(logit_scale, features):
    """t as a 0-d Tensor on the features' device: a plain number would stay a host scalar, and exp(t) of it
    a host 0-d array, which CuPy refuses to multiply with device logits."""
    if isinstance(logit_scale, Tensor):
        return logit_scale
    return Tensor(backend.asarray(float(logit_scale), dtype=features.dtype, like=features))


def cross_entropy_loss(logits, labels, axis):
    """Mean cross-entropy with the softmax taken along `axis` of the (n, n) logits, as in Figure 3:
    axis=1 normalises each row (an image against all texts), axis=0 each column (a text against all images)."""
    return F.cross_entropy(logits if axis == 1 else logits.T, labels)


def clip_loss(image_features, text_features, logit_scale, return_logits=False):
    """Figure 3's symmetric cross-entropy over the n x n similarity matrix of a batch.

    image_features: (n, d_e) Tensor, np.dot(I_f, W_i) = CLIP.encode_image(images).
    text_features:  (n, d_e) Tensor, np.dot(T_f, W_t) = CLIP.encode_text(tokens); row i pairs with image i.
    logit_scale: t, the log of the inverse temperature (CLIP.logit_scale, a Tensor, or a number);
        exp(t) is clamped at MAX_LOGIT_SCALE (100).
    Returns the scalar loss Tensor, or (loss, logits (n, n)) with return_logits=True;
    logits[i, j] = exp(t) * cos(image i, text j).
    """
    if len(image_features.shape) != 2 or tuple(text_features.shape) != tuple(image_features.shape):
        raise ValueError(f"clip_loss: image and text features must both be (n, d_e), got "
                         f"{tuple(image_features.shape)} and {tuple(text_features.shape)}")
    n = image_features.shape[0]
    if n < 2:
        raise ValueError(f"clip_loss: a batch of {n} pair(s) has no negatives; with one pair the softmax "
                         "has a single entry and the contrastive loss is identically zero. Use n >= 2.")
    t = _as_scale(logit_scale, image_features)
    xp = backend.get_array_module(image_features)

    I_e = F.l2_normalize(image_features, axis=1)           # I_e = l2_normalize(np.dot(I_f, W_i), axis=1)
    T_e = F.l2_normalize(text_features, axis=1)            # T_e = l2_normalize(np.dot(T_f, W_t), axis=1)
    logits = (I_e @ T_e.T) * _ClampMax(MAX_LOGIT_SCALE)(t.exp())  # logits = np.dot(I_e, T_e.T) * np.exp(t)
    labels = xp.arange(n)                                  # labels = np.arange(n)
    loss_i = cross_entropy_loss(logits, labels, axis=0)    # loss_i = cross_entropy_loss(logits, labels, axis=0)
    loss_t = cross_entropy_loss(logits, labels, axis=1)    # loss_t = cross_entropy_loss(logits, labels, axis=1)
    loss = (loss_i + loss_t) / 2                           # loss = (loss_i + loss_t)/2
    return (loss, logits) if return_logits else loss


def clip_loss_global(image_features, text_features, logit_scale):
    """Figure 3 over the global batch of K data-parallel ranks, computed on each rank for its own rows.

    image_features, text_features: this rank's (n, d_e) Tensors; every rank has the same n.
    Each rank gathers the normalised features of all ranks (N = K*n, rank r's at rows [r*n, (r+1)*n))
    and computes its n rows of the N x N logits, and its n rows of the transposed ones (open_clip's
    local_loss with gather_with_grad). The mean of the returned losses over ranks equals
    clip_loss on the concatenated batch, and after averaging gradients over ranks so do the
    gradients (the gather's backward sums every rank's gradient for a slice). On one process it
    is clip_loss. See docs/distributed.md for the picture.
    """
    from . import distributed as dist
    if dist.world_size() == 1:
        return clip_loss(image_features, text_features, logit_scale)
    n = image_features.shape[0]
    t = _as_scale(logit_scale, image_features)
    xp = backend.get_array_module(image_features)

    I_e = F.l2_normalize(image_features, axis=1)           # I_e = l2_normalize(np.dot(I_f, W_i), axis=1)  [n, d_e]
    T_e = F.l2_normalize(text_features, axis=1)            # T_e = l2_normalize(np.dot(T_f, W_t), axis=1)  [n, d_e]
    all_I, all_T = dist.all_gather(I_e), dist.all_gather(T_e)  # the global batch's embeddings         [N, d_e]
    scale = _ClampMax(MAX_LOGIT_SCALE)(t.exp())
    logits_per_image = (I_e @ all_T.T) * scale             # my rows of logits = np.dot(I_e, T_e.T) * np.exp(t)
    logits_per_text = (T_e @ all_I.T) * scale              # my rows of logits.T, (n, N) each
    labels = xp.arange(n) + dist.rank() * n                # labels = np.arange(N), my slice of it
    loss_i = F.cross_entropy(logits_per_text, labels)      # loss_i = cross_entropy_loss(logits, labels, axis=0)
    loss_t = F.cross_entropy(logits_per_image, labels)     # loss_t = cross_entropy_loss(logits, labels, axis=1)
    return (loss_i + loss_t) / 2                           # loss = (loss_i + loss_t)/2 (mean over ranks: global)


def contrastive_accuracy(logits_per_image):
    """Top-1 retrieval accuracy within a batch from the (n, n) logits (Tensor or array):
    i2t = fraction of images whose best text is their own caption, t2i = the reverse. Floats in [0, 1]."""
    logits = backend.unwrap(logits_per_image)
    xp = backend.get_array_module(logits)
    target = xp.arange(logits.shape[0])
    return {"i2t": float((logits.argmax(axis=1) == target).mean()),
            "t2i": float((logits.argmax(axis=0) == target).mean())}


__all__ = ["clip_loss", "clip_loss_global", "contrastive_accuracy", "cross_entropy_loss", "MAX_LOGIT_SCALE"]
