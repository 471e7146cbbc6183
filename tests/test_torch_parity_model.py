"""Parity with OpenAI's clip/model.py itself (sequence-first (L, N, D) layout, torch.nn.MultiheadAttention,
F.multi_head_attention_forward in the attention pool), run by PyTorch with the same weights: the same features,
logits, loss and gradients. tests/torch_reference.py loads it; without it installed the tests skip and name
the command that installs it.

In float64 the comparison is to 1e-9. OpenAI's LayerNorm subclass computes in float32 whatever the input
(it exists for fp16 weights), so for the float64 runs it is given torch.nn.LayerNorm's own forward, which
keeps the input's dtype; the float32 test runs OpenAI's code unchanged.
"""

import numpy as np
import pytest
from _helpers import host
from torch_reference import TorchCLIP, openai, require, torch_loss

from minclip import backend
from minclip.loss import clip_loss
from minclip.model import CLIP

torch = require("model")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models: threads only add contention (seconds on a busy 2-core CI machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- the comparison
CONFIGS = {
    "vit": dict(embed_dim=32, image_resolution=16, vision_layers=2, vision_width=64, vision_patch_size=4,
                context_length=12, vocab_size=50, transformer_width=64, transformer_heads=1, transformer_layers=2),
    "resnet": dict(embed_dim=32, image_resolution=64, vision_layers=[1, 2, 1, 1], vision_width=8,
                   vision_patch_size=None, context_length=12, vocab_size=50, transformer_width=64,
                   transformer_heads=1, transformer_layers=2),
}


@pytest.fixture
def float64_layer_norm(monkeypatch):
    monkeypatch.setattr(openai("model").LayerNorm, "forward", torch.nn.LayerNorm.forward)


def make_pair(kind, dtype=np.float64):
    backend.manual_seed(0)
    with backend.default_dtype(dtype):
        ours = CLIP(**CONFIGS[kind])
    theirs = TorchCLIP(**CONFIGS[kind]).to(torch.float64 if dtype == np.float64 else torch.float32)
    sd = ours.state_dict()
    if kind == "resnet":  # non-trivial BN gains (bn3 starts at zero) and running statistics
        rng = np.random.default_rng(1)
        for k in sd:
            if k.endswith(("bn3.weight", "running_mean", "running_var")):
                sd[k] = (rng.random(sd[k].shape) + 0.5).astype(sd[k].dtype)
        ours.load_state_dict(sd)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
    return ours, theirs


def inputs(kind, n=4, seed=0):
    rng = np.random.default_rng(seed)
    R = CONFIGS[kind]["image_resolution"]
    images = rng.standard_normal((n, 3, R, R))
    tokens = rng.integers(1, 48, (n, 12))
    tokens[np.arange(n), rng.integers(3, 12, n)] = 49  # EOT, the largest id
    return images, tokens


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_state_dict_keys_and_shapes_match_torch(kind):
    ours, theirs = make_pair(kind)
    ref = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == ref


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_eval_outputs_match_torch(kind, float64_layer_norm):
    ours, theirs = make_pair(kind)
    ours.eval(), theirs.eval()
    images, tokens = inputs(kind)
    with torch.no_grad():
        ti, tt = torch.from_numpy(images), torch.from_numpy(tokens)
        ref_img, ref_txt = theirs.encode_image(ti).numpy(), theirs.encode_text(tt).numpy()
        ref_logits = theirs(ti, tt)[0].numpy()
    np.testing.assert_allclose(ours.encode_image(images).numpy(), ref_img, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ours.encode_text(tokens).numpy(), ref_txt, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ours(images, tokens)[0].numpy(), ref_logits, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_loss_gradients_match_torch(kind, float64_layer_norm):
    ours, theirs = make_pair(kind)
    ours.train(), theirs.train()  # BatchNorm on batch statistics in both
    images, tokens = inputs(kind, n=6)
    loss = clip_loss(ours.encode_image(images), ours.encode_text(tokens), ours.logit_scale)
    loss.backward()
    ref = torch_loss(theirs(torch.from_numpy(images), torch.from_numpy(tokens))[0])
    ref.backward()
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-9)
    grads = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(host(grads[name].grad), p.grad.numpy(), rtol=1e-4, atol=1e-9, err_msg=name)
    # running statistics were updated identically (PyTorch's unbiased running variance)
    ours_sd = ours.state_dict()
    for k, v in theirs.state_dict().items():
        np.testing.assert_allclose(ours_sd[k], v.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)


def test_float32_outputs_match_torch():
    ours, theirs = make_pair("vit", dtype=np.float32)
    ours.eval(), theirs.eval()
    images, tokens = inputs("vit")
    images = images.astype(np.float32)
    with torch.no_grad():
        ref = theirs(torch.from_numpy(images), torch.from_numpy(tokens))[0].numpy()
    out = ours(images, tokens)[0]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4)
