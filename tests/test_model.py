"""CLIP model: OpenAI-compatible state_dict, build_model, named configs, input checks, initialisation,
the short-token path, and a float64 gradient check of the whole loss w.r.t. every parameter group."""
import math
import re

import numpy as np
import pytest
from _helpers import host

from minclip import backend, nn
from minclip.autograd import Tensor
from minclip.gradcheck import gradcheck
from minclip.loss import clip_loss
from minclip.model import CLIP, CONFIG_KEYS, build_model, create_model, list_models, load_config
from minclip.resnet import ModifiedResNet
from minclip.transformer import VisionTransformer

VIT = dict(embed_dim=16, image_resolution=8, vision_layers=2, vision_width=64, vision_patch_size=4,
           context_length=8, vocab_size=20, transformer_width=64, transformer_heads=1, transformer_layers=2)
RN = dict(embed_dim=16, image_resolution=32, vision_layers=[1, 2, 1, 1], vision_width=4, vision_patch_size=None,
          context_length=8, vocab_size=20, transformer_width=64, transformer_heads=1, transformer_layers=2)
CFGS = {"vit": VIT, "rn": RN}


def make(kind, dtype=np.float64, seed=0):
    backend.manual_seed(seed)
    with backend.default_dtype(dtype):
        return CLIP(**CFGS[kind])


def batch(kind, n=4, L=None, seed=0):
    cfg = CFGS[kind]
    rng = np.random.default_rng(seed)
    R, L = cfg["image_resolution"], L or cfg["context_length"]
    images = rng.standard_normal((n, 3, R, R))
    tokens = rng.integers(1, cfg["vocab_size"] - 1, (n, L))
    eot = rng.integers(0, L, n)
    tokens[np.arange(n), eot] = cfg["vocab_size"] - 1  # EOT: the largest id
    tokens[np.arange(L) > eot[:, None]] = 0             # zero padding after it, as tokenize() does
    return images, tokens


# ----------------------------------------------------------------------------- OpenAI's state_dict layout
def _resblock(prefix, d):
    return {f"{prefix}.attn.in_proj_weight": (3 * d, d), f"{prefix}.attn.in_proj_bias": (3 * d,),
            f"{prefix}.attn.out_proj.weight": (d, d), f"{prefix}.attn.out_proj.bias": (d,),
            f"{prefix}.ln_1.weight": (d,), f"{prefix}.ln_1.bias": (d,),
            f"{prefix}.mlp.c_fc.weight": (4 * d, d), f"{prefix}.mlp.c_fc.bias": (4 * d,),
            f"{prefix}.mlp.c_proj.weight": (d, 4 * d), f"{prefix}.mlp.c_proj.bias": (d,),
            f"{prefix}.ln_2.weight": (d,), f"{prefix}.ln_2.bias": (d,)}


def _bn(prefix, c):
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def openai_keys(cfg):
    """Key -> shape of OpenAI's CLIP state_dict, written out from the architecture in clip/model.py."""
    W, E, ctx = cfg["transformer_width"], cfg["embed_dim"], cfg["context_length"]
    keys = {"positional_embedding": (ctx, W), "text_projection": (W, E), "logit_scale": (),
            "token_embedding.weight": (cfg["vocab_size"], W), "ln_final.weight": (W,), "ln_final.bias": (W,)}
    for i in range(cfg["transformer_layers"]):
        keys.update(_resblock(f"transformer.resblocks.{i}", W))
    w, R = cfg["vision_width"], cfg["image_resolution"]
    if isinstance(cfg["vision_layers"], int):  # VisionTransformer
        P = cfg["vision_patch_size"]
        keys.update({"visual.class_embedding": (w,), "visual.positional_embedding": ((R // P) ** 2 + 1, w),
                     "visual.proj": (w, E), "visual.conv1.weight": (w, 3, P, P),
                     "visual.ln_pre.weight": (w,), "visual.ln_pre.bias": (w,),
                     "visual.ln_post.weight": (w,), "visual.ln_post.bias": (w,)})
        for i in range(cfg["vision_layers"]):
            keys.update(_resblock(f"visual.transformer.resblocks.{i}", w))
        return keys
    # ModifiedResNet: 3-conv stem, four stages of Bottlenecks, attention pool
    keys.update({"visual.conv1.weight": (w // 2, 3, 3, 3), "visual.conv2.weight": (w // 2, w // 2, 3, 3),
                 "visual.conv3.weight": (w, w // 2, 3, 3)})
    keys.update({**_bn("visual.bn1", w // 2), **_bn("visual.bn2", w // 2), **_bn("visual.bn3", w)})
    inplanes = w
    for s, blocks in enumerate(cfg["vision_layers"]):
        planes = w * 2 ** s
        for b in range(blocks):
            p = f"visual.layer{s + 1}.{b}"
            keys.update({f"{p}.conv1.weight": (planes, inplanes, 1, 1), f"{p}.conv2.weight": (planes, planes, 3, 3),
                         f"{p}.conv3.weight": (planes * 4, planes, 1, 1)})
            keys.update({**_bn(f"{p}.bn1", planes), **_bn(f"{p}.bn2", planes), **_bn(f"{p}.bn3", planes * 4)})
            if b == 0 and (s > 0 or inplanes != planes * 4):
                keys[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                keys.update(_bn(f"{p}.downsample.1", planes * 4))
            inplanes = planes * 4
    C = w * 32
    keys["visual.attnpool.positional_embedding"] = ((R // 32) ** 2 + 1, C)
    for proj in ("q_proj", "k_proj", "v_proj"):
        keys.update({f"visual.attnpool.{proj}.weight": (C, C), f"visual.attnpool.{proj}.bias": (C,)})
    keys.update({"visual.attnpool.c_proj.weight": (E, C), "visual.attnpool.c_proj.bias": (E,)})
    return keys


class TestStateDict:
    @pytest.mark.parametrize("kind", ["vit", "rn"])
    def test_keys_and_shapes_equal_openai(self, kind):
        sd = make(kind).state_dict()
        expected = openai_keys(CFGS[kind])
        assert set(sd) == set(expected)
        assert {k: v.shape for k, v in sd.items()} == expected
        assert sd["logit_scale"].dtype == np.float64
        if kind == "rn":
            assert sd["visual.layer1.0.bn1.num_batches_tracked"].dtype == np.int64

    def test_tiny_configs_have_openai_layout(self):
        for name in ("tiny-vit", "tiny-rn"):
            sd = create_model(name).state_dict()
            assert {k: v.shape for k, v in sd.items()} == openai_keys(load_config(name))

    @pytest.mark.parametrize("kind", ["vit", "rn"])
    def test_build_model_round_trip(self, kind):
        model = make(kind).eval()
        images, tokens = batch(kind)
        with backend.default_dtype(np.float64):
            rebuilt = build_model(model.state_dict())
        assert not rebuilt.training and all(not m.training for m in rebuilt.modules())
        assert isinstance(rebuilt.visual, VisionTransformer if kind == "vit" else ModifiedResNet)
        assert rebuilt.context_length == model.context_length and rebuilt.vocab_size == model.vocab_size
        for a, b in zip(model(images, tokens), rebuilt(images, tokens)):
            np.testing.assert_array_equal(host(a), host(b))
        np.testing.assert_array_equal(host(model.encode_image(images)), host(rebuilt.encode_image(images)))

    def test_build_model_infers_configs(self):
        for name in ("tiny-vit", "tiny-rn"):
            cfg = load_config(name)
            model = build_model(create_model(name).state_dict())
            sd = model.state_dict()
            assert {k: v.shape for k, v in sd.items()} == openai_keys(cfg)
            assert model.visual.input_resolution == cfg["image_resolution"]

    def test_build_model_fp16_and_extra_entries(self):
        model = make("vit", dtype=np.float32)
        sd = {k: (v.astype(np.float16) if v.dtype.kind == "f" else v) for k, v in model.state_dict().items()}
        sd.update(input_resolution=np.array(8), context_length=np.array(8), vocab_size=np.array(20))
        keys = set(sd)
        rebuilt = build_model(sd)
        assert set(sd) == keys  # the caller's dict is not modified
        assert rebuilt.dtype == np.float32
        np.testing.assert_array_equal(host(rebuilt.visual.proj), sd["visual.proj"].astype(np.float32))

    def test_build_model_fills_missing_num_batches_tracked(self):
        sd = {k: v for k, v in make("rn").state_dict().items() if not k.endswith("num_batches_tracked")}
        build_model(sd)

    @pytest.mark.parametrize("key", ["text_projection", "visual.conv1.weight", "ln_final.weight",
                                     "positional_embedding", "token_embedding.weight"])
    def test_build_model_missing_config_key(self, key):
        sd = make("vit").state_dict()
        del sd[key]
        with pytest.raises(ValueError, match=f"build_model: state_dict has no '{key}'"):
            build_model(sd)

    def test_build_model_missing_resnet_key(self):
        sd = make("rn").state_dict()
        del sd["visual.attnpool.positional_embedding"]
        with pytest.raises(ValueError, match="visual.attnpool.positional_embedding"):
            build_model(sd)

    def test_build_model_missing_weight(self):
        sd = make("vit").state_dict()
        del sd["transformer.resblocks.0.ln_1.bias"]
        with pytest.raises(ValueError, match=r"missing keys \['transformer.resblocks.0.ln_1.bias'\]"):
            build_model(sd)

    def test_build_model_extra_key(self):
        sd = make("vit").state_dict()
        sd["visual.extra.weight"] = np.zeros(3)
        with pytest.raises(ValueError, match=r"unexpected keys \['visual.extra.weight'\]"):
            build_model(sd)

    def test_build_model_misshaped_key(self):
        sd = make("vit").state_dict()
        sd["ln_final.bias"] = np.zeros(63)
        with pytest.raises(ValueError, match=r"ln_final.bias has shape \(63,\) in the state_dict but \(64,\)"):
            build_model(sd)

    def test_load_state_dict_failure_changes_nothing(self):
        model = make("vit")
        before = model.state_dict()
        sd = make("vit", seed=1).state_dict()
        sd["visual.proj"] = np.zeros((3, 3))
        with pytest.raises(ValueError, match="visual.proj"):
            model.load_state_dict(sd)
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(v, before[k])


# ----------------------------------------------------------------------------- initialisation
class TestInit:
    def test_openai_initialisation(self):
        model = create_model("tiny-vit", vocab_size=4096, transformer_width=256, transformer_heads=4)
        assert math.isclose(float(host(model.logit_scale)), math.log(1 / 0.07), rel_tol=1e-6)
        assert math.isclose(math.exp(float(host(model.logit_scale))), 1 / 0.07, rel_tol=1e-6)

        def std(p):
            return float(np.std(host(p)))
        W, layers = 256, 3
        assert abs(std(model.token_embedding.weight) / 0.02 - 1) < 0.02
        assert abs(std(model.positional_embedding) / 0.01 - 1) < 0.05
        assert abs(std(model.text_projection) / W ** -0.5 - 1) < 0.05
        block = model.transformer.resblocks[0]
        assert abs(std(block.attn.in_proj_weight) / W ** -0.5 - 1) < 0.05
        assert abs(std(block.attn.out_proj.weight) / (W ** -0.5 * (2 * layers) ** -0.5) - 1) < 0.05
        assert abs(std(block.mlp.c_fc.weight) / (2 * W) ** -0.5 - 1) < 0.05
        assert abs(std(block.mlp.c_proj.weight) / (W ** -0.5 * (2 * layers) ** -0.5) - 1) < 0.05
        vit = model.visual  # the ViT keeps its own width ** -0.5 scale
        assert abs(std(vit.positional_embedding) / 128 ** -0.5 - 1) < 0.1
        assert abs(std(vit.proj) / 128 ** -0.5 - 1) < 0.1

    def test_resnet_initialisation(self):
        model = create_model("tiny-rn")
        pool = model.visual.attnpool
        for lin in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
            assert abs(float(np.std(host(lin.weight))) / 512 ** -0.5 - 1) < 0.05
        bn3 = [p for k, p in model.visual.named_parameters() if k.startswith("layer") and k.endswith("bn3.weight")]
        assert len(bn3) == 4 and all((host(p) == 0).all() for p in bn3)
        assert (host(model.visual.bn3.weight) == 1).all()  # the stem's bn3 is not a residual branch

    def test_seed_reproducible(self):
        a, b = make("vit", seed=3).state_dict(), make("vit", seed=3).state_dict()
        assert all(np.array_equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- forward semantics
class TestForward:
    @pytest.mark.parametrize("kind", ["vit", "rn"])
    def test_logits(self, kind):
        model = make(kind).eval()
        images, tokens = batch(kind)
        lpi, lpt = model(images, tokens)
        i, t = host(model.encode_image(images)), host(model.encode_text(tokens))
        i, t = i / np.linalg.norm(i, axis=1, keepdims=True), t / np.linalg.norm(t, axis=1, keepdims=True)
        np.testing.assert_allclose(host(lpi), (1 / 0.07) * i @ t.T, rtol=1e-10)
        np.testing.assert_array_equal(host(lpt), host(lpi).T)
        assert model.encode_image(images).shape == (4, 16) and model.encode_text(tokens).shape == (4, 16)

    def test_eot_features(self):
        """The text feature is read at the EOT token (the largest id): later positions do not matter."""
        model = make("vit")
        _, tokens = batch("vit")
        changed = tokens.copy()
        eot = tokens.argmax(1)
        for r, e in enumerate(eot):
            changed[r, e + 1:] = 7
        np.testing.assert_allclose(host(model.encode_text(changed)), host(model.encode_text(tokens)), rtol=1e-12)

    @pytest.mark.parametrize("L", [1, 3, 5, 7])
    def test_short_tokens_equal_zero_padding(self, L):
        model = make("vit")
        _, tokens = batch("vit", L=L, seed=L)
        padded = np.zeros((len(tokens), 8), np.int64)
        padded[:, :L] = tokens
        np.testing.assert_allclose(host(model.encode_text(tokens)), host(model.encode_text(padded)),
                                   rtol=1e-12, atol=1e-14)

    def test_dtypes(self):
        model = make("vit", dtype=np.float32)
        images, tokens = batch("vit")
        assert model.dtype == np.float32
        assert model.encode_image(images).dtype == np.float32  # float64 arrays are cast to the model's dtype
        assert model.encode_text(tokens.astype(np.int32)).dtype == np.float32
        assert model.encode_text(Tensor(tokens)).dtype == np.float32
        assert model.encode_image(images.tolist()).shape == (4, 16)
        model.to(np.float64)
        assert model.encode_text(tokens).dtype == np.float64 and model.encode_image(images).dtype == np.float64

    def test_image_tensor_gets_gradient(self):
        model = make("vit", dtype=np.float32)
        images, _ = batch("vit")
        x = Tensor(backend.asarray(images), requires_grad=True)  # float64 Tensor: cast inside the graph
        model.encode_image(x).sum().backward()
        assert x.grad is not None and x.grad.shape == images.shape and x.grad.dtype == np.float64


class TestBadInput:
    @pytest.mark.parametrize("shape", [(2, 3, 8, 9), (2, 1, 8, 8), (3, 8, 8), (2, 3, 16, 16)])
    def test_image_shape(self, shape):
        model = make("vit")
        with pytest.raises(ValueError, match=re.escape(f"expected images of shape (N, 3, 8, 8), got {shape}")):
            model.encode_image(np.zeros(shape))

    def test_token_id_too_large(self):
        model = make("vit")
        with pytest.raises(ValueError, match="max id 20.*vocab_size is 20"):
            model.encode_text(np.array([[1, 20, 0]]))

    def test_token_id_negative(self):
        with pytest.raises(ValueError, match=r"\[0, 20\)"):
            make("vit").encode_text(np.array([[1, -1, 0]]))

    def test_float_tokens(self):
        with pytest.raises(ValueError, match="integers, got dtype float64"):
            make("vit").encode_text(np.array([[1.0, 2.0]]))

    def test_too_long(self):
        with pytest.raises(ValueError, match=r"9 positions but context_length is 8; use "
                                             r"minclip.tokenize\(..., truncate=True\)"):
            make("vit").encode_text(np.ones((2, 9), np.int64))

    @pytest.mark.parametrize("tokens", [np.ones(5, np.int64), np.ones((1, 2, 3), np.int64),
                                        np.ones((2, 0), np.int64)])
    def test_token_shape(self, tokens):
        with pytest.raises(ValueError, match="encode_text"):
            make("vit").encode_text(tokens)


# ----------------------------------------------------------------------------- configs
class TestConfigs:
    PAPER = ["RN50", "RN101", "RN50x4", "ViT-B-32", "ViT-B-16", "ViT-L-14"]

    def test_list_models(self):
        assert set(list_models()) == set(self.PAPER) | {"tiny-vit", "tiny-rn"}

    def test_configs_complete_and_round_trippable(self):
        for name in list_models():
            cfg = load_config(name)
            assert tuple(cfg) == CONFIG_KEYS, name
            assert cfg["transformer_heads"] == cfg["transformer_width"] // 64, name  # build_model's rule

    def test_paper_shapes(self):
        vit_b32 = load_config("ViT-B-32")
        assert (vit_b32["embed_dim"], vit_b32["vision_width"], vit_b32["vision_layers"],
                vit_b32["vision_patch_size"]) == (512, 768, 12, 32)
        assert vit_b32["vocab_size"] == 49408 and vit_b32["context_length"] == 77
        assert load_config("RN50")["vision_layers"] == [3, 4, 6, 3]
        assert load_config("RN101")["vision_layers"] == [3, 4, 23, 3]
        assert load_config("RN50x4")["image_resolution"] == 288
        assert load_config("ViT-L-14")["transformer_width"] == 768

    def test_tiny_configs(self):
        assert load_config("tiny-vit") == dict(
            embed_dim=64, image_resolution=64, vision_layers=4, vision_width=128, vision_patch_size=16,
            context_length=77, vocab_size=1024, transformer_width=128, transformer_heads=2, transformer_layers=3)
        assert load_config("tiny-rn") == dict(
            embed_dim=64, image_resolution=64, vision_layers=[1, 1, 1, 1], vision_width=16, vision_patch_size=None,
            context_length=77, vocab_size=1024, transformer_width=128, transformer_heads=2, transformer_layers=3)
        assert create_model("tiny-vit").num_parameters() == 1_646_593
        assert create_model("tiny-rn").num_parameters() == 2_073_561

    def test_config_keys_are_the_constructor_arguments(self):
        assert CONFIG_KEYS == ("embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size",
                               "context_length", "vocab_size", "transformer_width", "transformer_heads",
                               "transformer_layers")
        assert make("vit").config == VIT and make("rn").config == RN  # the ten arguments as given
        assert CLIP(**make("rn").config).num_parameters() == make("rn").num_parameters()

    def test_unknown_name(self):
        with pytest.raises(ValueError, match="unknown model config 'ViT-X'; available: .*ViT-B-32.*tiny-vit"):
            create_model("ViT-X")

    def test_overrides(self):
        model = create_model("tiny-vit", context_length=16, vision_layers=1)
        assert model.context_length == 16 and len(model.visual.transformer.resblocks) == 1
        with pytest.raises(ValueError, match="unknown config keys"):
            create_model("tiny-vit", depth=3)

    @pytest.mark.parametrize("name,count", [("RN50", 102_007_137), ("ViT-B-32", 151_277_313)])
    def test_paper_parameter_counts(self, name, count):
        """OpenAI's published totals (model.parameters(), logit_scale included). Builds in ~2-3 s."""
        assert create_model(name).num_parameters() == count


# ----------------------------------------------------------------------------- gradients of the whole loss
GROUPS = ["visual.", "transformer.", "token_embedding.", "positional_embedding", "ln_final.",
          "text_projection", "logit_scale"]


def smooth_relus(model):
    """GELU for ReLU: central differences are wrong across a ReLU kink (see test_blocks.py)."""
    for m in list(model.modules()):
        for name, v in list(vars(m).items()):
            if isinstance(v, nn.ReLU):
                setattr(m, name, nn.GELU())
    return model


@pytest.mark.parametrize("kind", ["vit", "rn"])
@pytest.mark.parametrize("group", GROUPS + ["images"])
def test_clip_loss_gradcheck(kind, group):
    model = smooth_relus(make(kind))
    with backend.default_dtype(np.float64):
        if kind == "rn":
            for name, p in model.named_parameters():  # switch the zero-initialised bn3 branches on
                if name.endswith("bn3.weight"):
                    nn.normal_(p, 1.0)
        images, tokens = batch(kind, L=6)
        images = Tensor(backend.asarray(images), requires_grad=(group == "images"))
        params = [p for k, p in model.named_parameters() if k.startswith(group)]
        assert params or group == "images"
        others = [p for p in model.parameters() if all(p is not q for q in params)]
        for p in others:
            p.requires_grad = False

        def loss(images, tokens):
            return clip_loss(model.encode_image(images), model.encode_text(tokens), model.logit_scale)
        gradcheck(loss, [images, tokens], params=params, max_elements=64, n_directions=3)
