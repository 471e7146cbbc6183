"""Counting compute: the FLOPs of a forward pass, read off the autograd graph, and of a training run.

The CLIP paper plots zero-shot error against training compute in GFLOPs (Figure 9, Sec. 3.1.5). Here
the count is taken from what the model actually ran: a forward pass records every Function with its
input Tensors (autograd.py), so walking the graph back from the outputs finds every matrix product,
linear layer, convolution and attention product, with the shapes it was called on.

Convention: a multiply-add is 2 FLOPs, so a product of an (M, K) and a (K, N) matrix costs 2 * M * K * N.
Only these products are counted; element-wise ops (layer norm, GELU, softmax, bias adds, residual adds,
pooling) are left out, as in Kaplan et al. 2020 ("Scaling Laws for Neural Language Models",
arXiv:2001.08361, Sec. 2.1): they cost O(activations), the products O(activations x width). Attention
is counted in full, (L, L) scores even under the causal mask, because that is what the code computes.

    from minclip.flops import forward_flops, training_flops
    forward_flops(model, images, tokens)        # {"image": ..., "text": ..., "logits": ..., "total": ...}
    training_flops(model, images, tokens, pairs_seen=98_304)
"""
import math
import numbers
from contextlib import contextmanager

from . import functional as F
from .autograd import MatMul, Tensor, enable_grad, topological_order


def _product_flops(xs, out):
    """a (..., M, K) @ b (..., K, N) -> (..., M, N), or x (..., K) @ W.T: 2 * K per output number."""
    return 2 * math.prod(out) * xs[0].shape[-1]


def _conv_flops(xs, out):
    """x (N, C, H, W) * W (O, C, kh, kw) -> (N, O, Ho, Wo): every output number is a dot product of
    C * kh * kw (the im2col row), padding included, as the code computes it."""
    return 2 * math.prod(out) * math.prod(xs[1].shape[1:])


def _attention_flops(xs, out):
    """q (..., Lq, dk), k (..., Lk, dk), v (..., Lk, dv) -> (..., Lq, dv): the scores q k^T cost
    2 Lq Lk dk per head, and weighting the values 2 Lq Lk dv."""
    q, k, v = xs
    return 2 * math.prod(out[:-1]) * k.shape[-2] * (q.shape[-1] + v.shape[-1])


# the Functions that multiply matrices, and how many FLOPs each costs given its inputs and output shape
COUNTED = {
    MatMul: _product_flops,
    F.Linear: _product_flops,
    F.Conv2d: _conv_flops,
    F.ScaledDotProductAttention: _attention_flops,
}


def graph_flops(*outputs):
    """FLOPs of the matrix products that made `outputs` (Tensors), by Function class name.

    Walks each output's graph back to its leaves (autograd.topological_order); a Function reached
    from two outputs is counted once. Returns {"MatMul": int, "Linear": ..., "Conv2d": ...,
    "ScaledDotProductAttention": ..., "total": int}; classes that did not run count 0.
    The graph must have been recorded (not under no_grad, some input requiring grad) and not yet
    freed by backward().
    """
    if not outputs or not all(isinstance(y, Tensor) for y in outputs):
        raise ValueError(f"graph_flops: expected output Tensors, got {[type(y).__name__ for y in outputs]}")
    counts = {cls.__name__: 0 for cls in COUNTED}
    seen = set()
    for y in outputs:
        if y.creator is None:
            continue  # a leaf: nothing was computed to make it
        for f in topological_order(y):
            count = COUNTED.get(type(f))
            if count is None or id(f) in seen:
                continue
            seen.add(id(f))
            # f.inputs are the Tensors f was called on; out_meta holds its outputs' (shape, dtype)
            counts[type(f).__name__] += count([x.data for x in f.inputs], f.out_meta[0][0])
    counts["total"] = sum(counts.values())
    return counts


@contextmanager
def _recording(model):
    """Record the graph inside the block whatever the caller's mode: backprop on, and every parameter
    requiring grad (a Function whose inputs need no grad is not recorded, and would go uncounted).
    The model runs in eval mode, so counting updates no BatchNorm statistics (the products are the same)."""
    params, modes = model.parameters(), [(m, m.training) for m in model.modules()]
    old = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad = True
        model.eval()
        with enable_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training
        for p, r in zip(params, old):
            p.requires_grad = r


def _check_batch(where, images, tokens):
    """N, the number of pairs, after checking that images (N, ...) and tokens (N, ...) are one batch."""
    n_img = images.shape[0] if getattr(images, "ndim", 0) >= 1 else None
    n_txt = tokens.shape[0] if getattr(tokens, "ndim", 0) >= 1 else None
    if n_img is None or n_txt is None or n_img != n_txt or n_img == 0:
        raise ValueError(f"{where}: need a batch of N >= 1 image-caption pairs, images (N, 3, R, R) and tokens "
                         f"(N, L); got images of shape {getattr(images, 'shape', None)} and tokens of shape "
                         f"{getattr(tokens, 'shape', None)}")
    return n_img


def forward_flops(model, images, tokens):
    """FLOPs of one forward pass of CLIP `model` on a batch, by component.

    images: (N, 3, R, R) array; tokens: (N, L) integer ids, L <= model.context_length (the L used in
    training: attention costs L^2). Runs encode_image, encode_text and forward (three passes, so the
    components are separate graphs) and returns ints:
    {"image": image encoder, "text": text encoder, "logits": the (N, N) similarity matrix, 2 N^2 embed_dim,
     "total": all three}. The model's train/eval mode, its BatchNorm statistics and its parameters'
    requires_grad are left as found.
    """
    _check_batch("forward_flops", images, tokens)
    with _recording(model):
        image = graph_flops(model.encode_image(images))["total"]
        text = graph_flops(model.encode_text(tokens))["total"]
        total = graph_flops(*model(images, tokens))["total"]   # both encoders and the logits, each once
    return {"image": image, "text": text, "logits": total - image - text, "total": total}


def training_flops(model, images, tokens, pairs_seen):
    """Approximate FLOPs of training `model` on `pairs_seen` image-caption pairs, as a float.

    3 x forward FLOPs per pair x pairs_seen: the backward pass is counted as twice the forward (each
    product needs one product for the gradient of each of its two operands), as in Kaplan et al. 2020,
    C = 6 N D for N parameters and D tokens. The optimizer's update and the element-wise ops are left out.
    images (N, 3, R, R), tokens (N, L): a batch as in training. Pass the training batch size N:
    the logits cost 2 N embed_dim per pair, which grows with it (a small term for small batches).
    """
    if not isinstance(pairs_seen, numbers.Real) or isinstance(pairs_seen, bool) or not 0 < pairs_seen < math.inf:
        raise ValueError(f"training_flops: pairs_seen must be a positive number of pairs, got {pairs_seen!r}")
    n = _check_batch("training_flops", images, tokens)
    return 3 * forward_flops(model, images, tokens)["total"] / n * pairs_seen


__all__ = ["COUNTED", "forward_flops", "graph_flops", "training_flops"]
