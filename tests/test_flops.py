"""minclip/flops.py: the graph walk counts every matrix product once, with the hand-written formulas.

Convention throughout: a multiply-add is 2 FLOPs, (M, K) @ (K, N) costs 2 M K N; element-wise ops are not
counted. Each count below is written out from the layer's shapes, independently of flops.py.
"""
import numpy as np
import pytest

from minclip import backend, nn
from minclip import functional as F
from minclip.autograd import MatMul, Tensor, no_grad
from minclip.flops import forward_flops, graph_flops, training_flops
from minclip.model import CLIP, create_model

# a small ViT CLIP: 32 px images in 8x8 patches (16 patches + the class token), two 64-wide image layers
# (one head), one 32-wide text layer (two heads), a 16-dimensional joint space
SMALL = dict(embed_dim=16, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
             context_length=8, vocab_size=64, transformer_width=32, transformer_heads=2, transformer_layers=1)


def batch(model, n, length, seed=0):
    """n random images (n, 3, R, R) and n token rows (n, length) ending in EOT (the largest id)."""
    rng = np.random.default_rng(seed)
    R = model.visual.input_resolution
    images = rng.standard_normal((n, 3, R, R)).astype(np.float32)
    tokens = rng.integers(1, model.vocab_size - 1, (n, length))
    tokens[:, -1] = model.vocab_size - 1
    return images, tokens


def block_flops(T, D):
    """One ResidualAttentionBlock on T tokens of width D (any number of heads: they split D)."""
    return (2 * T * D * 3 * D        # in_proj: q, k, v
            + 2 * T * T * D          # scores q k^T, summed over heads of width D / heads
            + 2 * T * T * D          # attention-weighted values
            + 2 * T * D * D          # out_proj
            + 2 * T * D * 4 * D      # mlp.c_fc
            + 2 * T * 4 * D * D)     # mlp.c_proj


def vit_clip_flops(c, n, length):
    """The forward FLOPs of a ViT CLIP of config c on n pairs of `length` tokens, by component."""
    G = c["image_resolution"] // c["vision_patch_size"]
    T, Dv, Dt, E, P = G * G + 1, c["vision_width"], c["transformer_width"], c["embed_dim"], c["vision_patch_size"]
    image = n * (2 * G * G * Dv * 3 * P * P                    # conv1: each patch (3 P P) -> Dv
                 + c["vision_layers"] * block_flops(T, Dv)
                 + 2 * Dv * E)                                 # proj of the class token
    text = n * (c["transformer_layers"] * block_flops(length, Dt)
                + 2 * Dt * E)                                  # text_projection of the EOT token
    logits = 2 * n * n * E                                     # image_features @ text_features.T
    return {"image": image, "text": text, "logits": logits, "total": image + text + logits}


# ----------------------------------------------------------------------------- single layers
def test_linear_is_two_flops_per_multiply_add():
    layer = nn.Linear(5, 7)
    x = Tensor(backend.asarray(np.ones((3, 4, 5), np.float32)))
    counts = graph_flops(layer(x))
    assert counts["Linear"] == 2 * (3 * 4) * 5 * 7       # 12 rows, each a (5,) . (5, 7) product
    assert counts["total"] == counts["Linear"] and counts["Conv2d"] == 0


def test_matmul_with_a_batch_dimension():
    a = Tensor(backend.asarray(np.ones((2, 3, 4), np.float32)), requires_grad=True)
    b = Tensor(backend.asarray(np.ones((4, 6), np.float32)))
    assert graph_flops(a @ b)["MatMul"] == 2 * 2 * 3 * 4 * 6


def test_conv_counts_every_window_padding_included():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    y = conv(Tensor(backend.asarray(np.ones((2, 3, 9, 9), np.float32))))
    Ho = (9 + 2 * 1 - 3) // 2 + 1                        # 5
    assert y.shape == (2, 8, Ho, Ho)
    assert graph_flops(y)["Conv2d"] == 2 * (2 * 8 * Ho * Ho) * (3 * 3 * 3)


def test_attention_scores_and_values():
    q = Tensor(backend.asarray(np.ones((2, 3, 5, 4), np.float32)), requires_grad=True)   # (N, heads, Lq, dk)
    k = Tensor(backend.asarray(np.ones((2, 3, 7, 4), np.float32)))                       # (N, heads, Lk, dk)
    v = Tensor(backend.asarray(np.ones((2, 3, 7, 6), np.float32)))                       # (N, heads, Lk, dv)
    assert graph_flops(F.scaled_dot_product_attention(q, k, v))["ScaledDotProductAttention"] == \
        2 * 2 * 3 * 5 * 7 * 4 + 2 * 2 * 3 * 5 * 7 * 6


def test_a_shared_function_is_counted_once_and_elementwise_ops_not_at_all():
    x = Tensor(backend.asarray(np.ones((4, 5), np.float32)), requires_grad=True)
    h = x @ Tensor(backend.asarray(np.ones((5, 5), np.float32)))           # 2 * 4 * 5 * 5 = 200
    y1, y2 = (h * 2).exp(), h.sum() + 1                    # both outputs reach the same MatMul
    assert graph_flops(y1, y2)["total"] == 200
    assert graph_flops(y1)["total"] == graph_flops(y2)["total"] == 200


# ----------------------------------------------------------------------------- a whole CLIP
def test_small_vit_clip_equals_the_formula():
    model = CLIP(**SMALL)
    images, tokens = batch(model, n=3, length=6)            # 6 < context_length: attention over 6 tokens
    assert forward_flops(model, images, tokens) == vit_clip_flops(SMALL, n=3, length=6)


def test_tiny_vit_equals_the_formula():
    """The shipped config (64 px, 16x16 patches, 4 image and 3 text layers of width 128)."""
    model = create_model("tiny-vit")
    images, tokens = batch(model, n=2, length=16)
    assert forward_flops(model, images, tokens) == vit_clip_flops(model.config, n=2, length=16)


def test_resnet_walk_finds_every_product_that_ran():
    """tiny-rn (convolutions, attention pooling): the walk finds exactly the products that forward ran,
    counted here by wrapping each counted Function's forward with its own formula."""
    model = create_model("tiny-rn")
    images, tokens = batch(model, n=2, length=5)
    ran = []
    formulas = {MatMul: lambda xs, y: 2 * y.size * xs[0].shape[-1],
                F.Linear: lambda xs, y: 2 * y.size * xs[0].shape[-1],
                F.Conv2d: lambda xs, y: 2 * y.size * int(np.prod(xs[1].shape[1:])),
                F.ScaledDotProductAttention:  # q (..., Lq, dk), k (..., Lk, dk), v (..., Lk, dv)
                    lambda xs, y: 2 * (y.size // y.shape[-1]) * xs[1].shape[-2] * (xs[0].shape[-1] + xs[2].shape[-1])}
    originals = {cls: cls.forward for cls in formulas}

    def wrapped(cls):
        def forward(f, *xs):
            y = originals[cls](f, *xs)
            ran.append(formulas[cls](xs, y))
            return y
        return forward
    try:
        for cls in formulas:
            cls.forward = wrapped(cls)
        images_only = graph_flops(model.encode_image(images))["total"]
    finally:
        for cls, fwd in originals.items():
            cls.forward = fwd
    assert len(ran) > 10 and images_only == sum(ran)


def test_counts_grow_linearly_with_batch_and_the_logits_quadratically():
    model = CLIP(**SMALL)
    one = forward_flops(model, *batch(model, n=4, length=6))
    two = forward_flops(model, *batch(model, n=8, length=6))
    assert two["image"] == 2 * one["image"] and two["text"] == 2 * one["text"]
    assert two["logits"] == 4 * one["logits"] == 4 * 2 * 4 * 4 * SMALL["embed_dim"]


def test_doubling_the_width_about_quadruples_the_image_encoder():
    """Per layer 24 T D^2 + 4 T^2 D: the D^2 terms dominate at T = 17, so the ratio is just under 4."""
    counts = {}
    for width in (64, 128):
        model = CLIP(**dict(SMALL, vision_width=width))
        counts[width] = forward_flops(model, *batch(model, n=2, length=6))["image"]
    assert 3.7 < counts[128] / counts[64] < 4.0, counts


def test_training_flops_are_three_forwards_per_pair():
    model = CLIP(**SMALL)
    images, tokens = batch(model, n=4, length=6)
    per_pair = vit_clip_flops(SMALL, n=4, length=6)["total"] / 4
    assert training_flops(model, images, tokens, pairs_seen=1000) == pytest.approx(3 * per_pair * 1000)
    assert training_flops(model, images, tokens, pairs_seen=np.int64(10)) == pytest.approx(3 * per_pair * 10)


# ----------------------------------------------------------------------------- modes and errors
def test_counts_under_no_grad_eval_and_frozen_weights_and_leaves_them_as_found():
    model = CLIP(**SMALL).eval()
    images, tokens = batch(model, n=2, length=6)
    expected = vit_clip_flops(SMALL, n=2, length=6)
    for p in model.visual.parameters():
        p.requires_grad = False                              # a frozen image tower records no graph by itself
    with no_grad():
        assert forward_flops(model, images, tokens) == expected
    assert not any(p.requires_grad for p in model.visual.parameters())
    assert all(p.requires_grad for p in model.transformer.parameters()) and not model.training


def test_counting_leaves_a_training_resnet_as_it_was():
    """tiny-rn in train mode: counting runs it in eval mode, so its BatchNorm statistics do not move."""
    model = create_model("tiny-rn").train()
    bn = model.visual.bn1
    before = bn.running_mean.copy(), bn.running_var.copy()
    forward_flops(model, *batch(model, n=2, length=5))
    assert model.training and bn.training
    assert (bn.running_mean == before[0]).all() and (bn.running_var == before[1]).all()


def test_bad_input_is_refused_with_a_message():
    model = CLIP(**SMALL)
    images, tokens = batch(model, n=3, length=6)
    with pytest.raises(ValueError, match="N >= 1 image-caption pairs"):
        forward_flops(model, images, tokens[:2])
    with pytest.raises(ValueError, match="pairs_seen must be a positive number"):
        training_flops(model, images, tokens, pairs_seen=0)
    with pytest.raises(ValueError, match="pairs_seen"):
        training_flops(model, images, tokens, pairs_seen=True)
    with pytest.raises(ValueError, match="expected output Tensors"):
        graph_flops(np.ones(3))
    with pytest.raises(ValueError, match="encode_image: expected images of shape"):
        forward_flops(model, images[:, :, :16, :16], tokens)


def test_a_freed_graph_is_an_error_not_a_zero():
    x = Tensor(backend.asarray(np.ones((2, 3), np.float32)), requires_grad=True)
    y = (x @ Tensor(backend.asarray(np.ones((3, 3), np.float32)))).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="freed"):
        graph_flops(y)
