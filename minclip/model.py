"""CLIP: an image encoder and a text encoder trained to agree (Radford et al. 2021).

"Learning Transferable Visual Models From Natural Language Supervision",
https://arxiv.org/abs/2103.00020. This file mirrors OpenAI's clip/model.py
(https://github.com/openai/CLIP): the same constructor arguments, module tree and
state_dict keys, the same initialisation and the same `build_model`, so released
checkpoints load by name. The blocks live in transformer.py and resnet.py, the
loss of Figure 3 in loss.py.

Named configurations are JSON files in minclip/configs/ (open_clip style):

    model = create_model("tiny-vit")          # or "RN50", "ViT-B-32", ... ; list_models()
"""
import inspect
import json
import math
from pathlib import Path

import numpy as np

from . import backend, nn
from . import functional as F
from .autograd import Tensor
from .resnet import ModifiedResNet
from .transformer import Transformer, VisionTransformer

CONFIG_DIR = Path(__file__).parent / "configs"


def build_visual(embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size):
    """The image encoder CLIP builds from its arguments (see CLIP): a ModifiedResNet when vision_layers
    is a tuple or list, else a VisionTransformer. forward((N, 3, R, R)) -> (N, embed_dim).
    objectives.py builds the same encoder under each of Figure 2's objectives."""
    if isinstance(vision_layers, (tuple, list)):
        vision_heads = vision_width * 32 // 64
        return ModifiedResNet(layers=vision_layers, output_dim=embed_dim, heads=vision_heads,
                              input_resolution=image_resolution, width=vision_width)
    vision_heads = max(1, vision_width // 64)
    return VisionTransformer(input_resolution=image_resolution, patch_size=vision_patch_size, width=vision_width,
                             layers=vision_layers, heads=vision_heads, output_dim=embed_dim)


def initial_logit_scale():
    """The learnt temperature of Figure 3 as a 0-d Parameter t. Section 2.5: "The learnable temperature
    parameter tau was initialized to the equivalent of 0.07"; stored as t = log(1 / tau) so that exp(t)
    scales the logits and stays positive."""
    return nn.Parameter(backend.xp.full((), math.log(1 / 0.07), backend.get_default_dtype()))


def encode_image(visual, image):
    """image: (N, 3, R, R) array or Tensor -> visual(image), (N, output_dim), after checking the shape and
    moving and casting the array to the encoder's device and dtype (a Tensor must already be there)."""
    R, weight = visual.input_resolution, visual.conv1.weight
    shape = tuple(image.shape) if hasattr(image, "shape") else np.shape(image)
    if len(shape) != 4 or shape[1:] != (3, R, R):
        raise ValueError(f"encode_image: expected images of shape (N, 3, {R}, {R}), got {shape}")
    if isinstance(image, Tensor):  # a Tensor keeps its graph, so it is not moved: it must be on the model's device
        device = backend.get_array_module(weight)
        if backend.get_array_module(image) is not device:
            raise ValueError(f"encode_image: the image Tensor holds a {backend.get_array_module(image).__name__} "
                             f"array but the model's weights are {device.__name__} arrays; make it with "
                             "Tensor(minclip.backend.asarray(images)), or pass the array itself")
        image = image if image.dtype == weight.dtype else image.astype(weight.dtype)
    else:
        image = Tensor(backend.asarray(image, dtype=weight.dtype, like=weight))
    return visual(image)


class CLIP(nn.Module):
    """Contrastive Language-Image Pre-training model (Section 2).

    embed_dim: size of the joint embedding space.
    image_resolution: R, images are (N, 3, R, R).
    vision_layers: a tuple/list (blocks per ResNet stage) selects ModifiedResNet with
        vision_width * 32 // 64 heads; an int (Transformer layers) selects a
        VisionTransformer with vision_width // 64 heads (at least 1) and patches of vision_patch_size.
    context_length, vocab_size, transformer_width/heads/layers: the text Transformer
        (OpenAI's models: 77 positions, 49,408 ids = 256 bytes + 256 bytes with </w> + 48,894 merges
        + SOT/EOT, 512 wide, 8 heads, 12 layers).
    Attributes as OpenAI's: visual, transformer, token_embedding, positional_embedding, ln_final,
    text_projection, logit_scale, context_length, vocab_size; and `tokenizer`, set by minclip.load.
    """
    def __init__(self, embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
                 context_length, vocab_size, transformer_width, transformer_heads, transformer_layers):
        self.config = dict(  # the constructor's arguments, kept for checkpoints
            embed_dim=embed_dim, image_resolution=image_resolution, vision_layers=vision_layers,
            vision_width=vision_width, vision_patch_size=vision_patch_size, context_length=context_length,
            vocab_size=vocab_size, transformer_width=transformer_width, transformer_heads=transformer_heads,
            transformer_layers=transformer_layers)
        self.context_length = context_length

        self.visual = build_visual(embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size)

        self.transformer = Transformer(width=transformer_width, layers=transformer_layers,
                                       heads=transformer_heads, attn_mask=self.build_attention_mask())

        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(backend.xp.zeros((context_length, transformer_width),
                                                                  backend.get_default_dtype()))
        self.ln_final = nn.LayerNorm(transformer_width)

        self.text_projection = nn.Parameter(backend.xp.zeros((transformer_width, embed_dim),
                                                             backend.get_default_dtype()))
        self.logit_scale = initial_logit_scale()
        self.tokenizer = None  # the tokenizer the weights were trained with, when minclip.load knows it

        self.initialize_parameters()

    def initialize_parameters(self):
        """OpenAI's initialisation (clip/model.py), std for std."""
        nn.normal_(self.token_embedding.weight, std=0.02)
        nn.normal_(self.positional_embedding, std=0.01)

        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.weight.shape[1] ** -0.5  # c_proj.in_features ** -0.5
            for lin in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.normal_(lin.weight, std=std)
            # zero the last BN gain of every residual branch: each Bottleneck starts as the identity
            for stage in (self.visual.layer1, self.visual.layer2, self.visual.layer3, self.visual.layer4):
                for name, param in stage.named_parameters():
                    if name.endswith("bn3.weight"):
                        nn.constant_(param, 0.0)

        # GPT-2 style: residual-branch outputs scaled down by sqrt(2 * layers)
        width, layers = self.transformer.width, self.transformer.layers
        proj_std = (width ** -0.5) * ((2 * layers) ** -0.5)
        attn_std = width ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.normal_(block.mlp.c_proj.weight, std=proj_std)

        nn.normal_(self.text_projection, std=width ** -0.5)

    def build_attention_mask(self):
        """(context_length, context_length) additive causal mask: token i sees tokens <= i
        (Section 2.4, "masked self-attention"). Shorter inputs use its top-left corner."""
        return F.causal_mask(self.context_length, dtype=backend.get_default_dtype())

    @property
    def dtype(self):
        """Floating dtype of the parameters; inputs are cast to it."""
        return self.visual.conv1.weight.dtype

    # ------------------------------------------------------------------------- encoders
    def encode_image(self, image):
        """image: (N, 3, R, R) array or Tensor -> image features I_f @ W_i, (N, embed_dim)."""
        return encode_image(self.visual, image)

    def encode_text(self, text):
        """text: (N, L) integer token ids, L <= context_length, each row ending in EOT (the largest id)
        -> text features T_f @ W_t, (N, embed_dim).

        L < context_length is allowed: the first L positional embeddings and the (L, L) corner of the
        causal mask are used. Because of the causal mask this gives exactly the features of the same
        tokens zero-padded to context_length, and attention costs L^2 instead of 77^2.
        """
        text = backend.unwrap(text)  # host ids stay on the host: the embedding checks their range, then moves them
        text = text if backend.is_array(text) else np.asarray(text)
        N, L = self._check_tokens(text)
        x = self.token_embedding(text)                                           # (N, L, width)
        pos = self.positional_embedding
        x = x + (pos if L == self.context_length else pos[:L])                   # (N, L, width)
        x = self.transformer(x)                                                  # (N, L, width), batch-first
        # features of the EOT token, the highest id in each row (as OpenAI). Gathering before ln_final
        # gives the same result (layer norm acts per token) and normalises N rows instead of N*L.
        xp = backend.get_array_module(text)
        rows, eot = (backend.asarray(i, like=x.data) for i in (xp.arange(N), text.argmax(axis=-1)))
        x = x[rows, eot]                                                         # (N, width)
        return self.ln_final(x) @ self.text_projection                           # (N, embed_dim)

    def _check_tokens(self, text):
        if text.ndim != 2:
            raise ValueError(f"encode_text: expected token ids of shape (N, L) with L <= {self.context_length}, "
                             f"got shape {text.shape}")
        if text.dtype.kind not in "iu":
            raise ValueError(f"encode_text: token ids must be integers, got dtype {text.dtype}; "
                             "use minclip.tokenize(...) to make them")
        N, L = text.shape
        if L > self.context_length:
            raise ValueError(f"encode_text: tokens have {L} positions but context_length is {self.context_length}; "
                             "use minclip.tokenize(..., truncate=True)")
        if N == 0 or L == 0:
            raise ValueError(f"encode_text: got an empty token array of shape {text.shape}")
        return N, L  # the range of the ids is checked once, by the token embedding

    def forward(self, image, text):
        """image (N, 3, R, R), text (M, L) -> (logits_per_image (N, M), logits_per_text (M, N)):
        cosine similarities of the normalised features, scaled by exp(logit_scale)."""
        image_features = F.l2_normalize(self.encode_image(image), axis=1)
        text_features = F.l2_normalize(self.encode_text(text), axis=1)
        logits_per_image = self.logit_scale.exp() * (image_features @ text_features.T)
        return logits_per_image, logits_per_image.T


# the ten constructor arguments, in order: read off the signature so the names are written once
CONFIG_KEYS = tuple(inspect.signature(CLIP.__init__).parameters)[1:]


# ----------------------------------------------------------------------------- checkpoints
def _entry(state_dict, key):
    if key not in state_dict:
        raise ValueError(f"build_model: state_dict has no {key!r}")
    return state_dict[key]


def _layer_count(state_dict, prefix):
    """Distinct block indices among keys "prefix.<i>.…"."""
    return len({k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)})


def build_model(state_dict):
    """A CLIP whose configuration is read off the shapes in `state_dict`, loaded strictly, in eval mode.

    Works like OpenAI's build_model: a ViT if "visual.proj" is present, else a ModifiedResNet;
    transformer_heads = transformer_width // 64. Arrays may be fp16 (upcast to the parameter dtype)
    or anything np.asarray accepts. The input dict is not modified.
    """
    sd = dict(state_dict)
    for key in ("input_resolution", "context_length", "vocab_size"):  # extras in OpenAI's JIT archives
        sd.pop(key, None)

    if "visual.proj" in sd:
        conv1 = np.shape(_entry(sd, "visual.conv1.weight"))
        vision_width = conv1[0]
        vision_layers = _layer_count(sd, "visual.transformer.resblocks.")
        vision_patch_size = conv1[-1]
        grid = round((np.shape(_entry(sd, "visual.positional_embedding"))[0] - 1) ** 0.5)
        image_resolution = vision_patch_size * grid
    else:
        vision_layers = tuple(_layer_count(sd, f"visual.layer{b}.") for b in (1, 2, 3, 4))
        vision_width = np.shape(_entry(sd, "visual.layer1.0.conv1.weight"))[0]
        n_pos = np.shape(_entry(sd, "visual.attnpool.positional_embedding"))[0]
        output_width = round((n_pos - 1) ** 0.5)
        if output_width ** 2 + 1 != n_pos:
            raise ValueError(f"build_model: visual.attnpool.positional_embedding has {n_pos} rows, "
                             "not a square grid plus one")
        vision_patch_size = None
        image_resolution = output_width * 32

    embed_dim = np.shape(_entry(sd, "text_projection"))[1]
    context_length = np.shape(_entry(sd, "positional_embedding"))[0]
    vocab_size = np.shape(_entry(sd, "token_embedding.weight"))[0]
    transformer_width = np.shape(_entry(sd, "ln_final.weight"))[0]
    transformer_heads = transformer_width // 64
    transformer_layers = _layer_count(sd, "transformer.resblocks.")

    model = CLIP(embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
                 context_length, vocab_size, transformer_width, transformer_heads, transformer_layers)
    # torch's BatchNorm fills in a missing num_batches_tracked the same way (older checkpoints lack it)
    for key, _, _ in model.named_buffers(persistent_only=True):
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = np.zeros((), np.int64)
    model.load_state_dict(sd)  # strict: ValueError naming missing, unexpected or mis-shaped keys
    return model.eval()


# ----------------------------------------------------------------------------- named configs
def list_models():
    """Names of the configs in minclip/configs, sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name):
    """The CLIP constructor arguments of config `name` as a dict."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown model config {name!r}; available: {', '.join(list_models())}")
    return json.loads(path.read_text())


def create_model(name, **overrides):
    """A freshly initialised CLIP from config `name`, with any constructor argument overridden."""
    config = load_config(name)
    unknown = sorted(set(overrides) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"create_model: unknown config keys {unknown}; valid keys: {', '.join(CONFIG_KEYS)}")
    config.update(overrides)
    return CLIP(**config)


__all__ = ["CLIP", "build_model", "build_visual", "create_model", "encode_image", "list_models", "load_config"]
