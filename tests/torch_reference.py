"""OpenAI's clip/model.py in PyTorch, condensed: the reference minclip is checked against.

Used only by the optional parity tests (tests/test_torch_parity_*.py) and the
side-by-side benchmarks (tests/benchmarks/bench_*.py); minclip itself never imports
torch, and importing this module without torch installed raises ImportError.
Sequence-first (L, N, D) layout and torch.nn.MultiheadAttention, as OpenAI's.
"""
from collections import OrderedDict

import numpy as np
import torch

tnn = torch.nn
TF = torch.nn.functional


class Bottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.relu1 = tnn.ReLU()
        self.conv2 = tnn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.relu2 = tnn.ReLU()
        self.avgpool = tnn.AvgPool2d(stride) if stride > 1 else tnn.Identity()
        self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(planes * 4)
        self.relu3 = tnn.ReLU()
        self.downsample = None
        if stride > 1 or inplanes != planes * 4:
            self.downsample = tnn.Sequential(OrderedDict([
                ("-1", tnn.AvgPool2d(stride)),
                ("0", tnn.Conv2d(inplanes, planes * 4, 1, stride=1, bias=False)),
                ("1", tnn.BatchNorm2d(planes * 4))]))

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu3(out + identity)


class AttentionPool2d(tnn.Module):
    def __init__(self, spacial_dim, embed_dim, num_heads, output_dim=None):
        super().__init__()
        self.positional_embedding = tnn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = tnn.Linear(embed_dim, embed_dim)
        self.q_proj = tnn.Linear(embed_dim, embed_dim)
        self.v_proj = tnn.Linear(embed_dim, embed_dim)
        self.c_proj = tnn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def forward(self, x):
        x = x.flatten(start_dim=2).permute(2, 0, 1)  # NCHW -> (HW)NC
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        x, _ = TF.multi_head_attention_forward(
            query=x[:1], key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0, out_proj_weight=self.c_proj.weight,
            out_proj_bias=self.c_proj.bias, use_separate_proj_weight=True, training=self.training,
            need_weights=False)
        return x.squeeze(0)


class ModifiedResNet(tnn.Module):
    def __init__(self, layers, output_dim, heads, input_resolution=224, width=64):
        super().__init__()
        self.input_resolution = input_resolution
        self.conv1 = tnn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(width // 2)
        self.relu1 = tnn.ReLU()
        self.conv2 = tnn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(width // 2)
        self.relu2 = tnn.ReLU()
        self.conv3 = tnn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = tnn.BatchNorm2d(width)
        self.relu3 = tnn.ReLU()
        self.avgpool = tnn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)

    def _make_layer(self, planes, blocks, stride=1):
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * 4
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return tnn.Sequential(*layers)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.avgpool(self.relu3(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


LayerNorm = tnn.LayerNorm  # OpenAI's subclass only upcasts fp16 to float32; we test float32 and float64


class QuickGELU(tnn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(tnn.Module):
    def __init__(self, d_model, n_head, attn_mask=None):
        super().__init__()
        self.attn = tnn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = tnn.Sequential(OrderedDict([
            ("c_fc", tnn.Linear(d_model, d_model * 4)), ("gelu", QuickGELU()),
            ("c_proj", tnn.Linear(d_model * 4, d_model))]))
        self.ln_2 = LayerNorm(d_model)
        self.attn_mask = attn_mask

    def attention(self, x):
        mask = self.attn_mask.to(dtype=x.dtype) if self.attn_mask is not None else None
        return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(tnn.Module):
    def __init__(self, width, layers, heads, attn_mask=None):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = tnn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisionTransformer(tnn.Module):
    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim):
        super().__init__()
        self.input_resolution = input_resolution
        self.conv1 = tnn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = tnn.Parameter(scale * torch.randn(width))
        self.positional_embedding = tnn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = tnn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x):
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([self.class_embedding.to(x.dtype)
                       + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype), x], dim=1)
        x = self.ln_pre(x + self.positional_embedding.to(x.dtype))
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)  # NLD -> LND -> NLD
        return self.ln_post(x[:, 0, :]) @ self.proj


class TorchCLIP(tnn.Module):
    def __init__(self, embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
                 context_length, vocab_size, transformer_width, transformer_heads, transformer_layers):
        super().__init__()
        self.context_length = context_length
        if isinstance(vision_layers, (tuple, list)):
            self.visual = ModifiedResNet(vision_layers, embed_dim, vision_width * 32 // 64, image_resolution,
                                         vision_width)
        else:
            self.visual = VisionTransformer(image_resolution, vision_patch_size, vision_width, vision_layers,
                                            vision_width // 64, embed_dim)
        mask = torch.empty(context_length, context_length).fill_(float("-inf")).triu_(1)
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads, mask)
        self.vocab_size = vocab_size
        self.token_embedding = tnn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = tnn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = tnn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = tnn.Parameter(torch.ones([]) * np.log(1 / 0.07))

    def encode_image(self, image):
        return self.visual(image)

    def encode_text(self, text):
        x = self.token_embedding(text) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection

    def forward(self, image, text):
        i = self.encode_image(image)
        t = self.encode_text(text)
        i = i / i.norm(dim=1, keepdim=True)
        t = t / t.norm(dim=1, keepdim=True)
        logits_per_image = self.logit_scale.exp() * i @ t.t()
        return logits_per_image, logits_per_image.t()


def torch_loss(logits_per_image):
    labels = torch.arange(logits_per_image.shape[0])
    return (TF.cross_entropy(logits_per_image, labels) + TF.cross_entropy(logits_per_image.t(), labels)) / 2


def clip_from_minclip(model, context_length=None):
    """A TorchCLIP (float32) with the weights of a minclip CLIP. context_length < the model's keeps
    the first positions only, so short captions run without padding, as minclip's encode_text."""
    cfg = dict(model.config)
    sd = model.state_dict()
    if context_length:
        cfg["context_length"] = context_length
        sd["positional_embedding"] = sd["positional_embedding"][:context_length]
    theirs = TorchCLIP(**cfg)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32) if v.dtype.kind == "f" else v)
                            for k, v in sd.items()}, strict=True)
    return theirs
