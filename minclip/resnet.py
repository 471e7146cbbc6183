"""CLIP's modified ResNet image encoder.

Radford et al. 2021, Section 2.4: "We make several modifications to the original
version [of ResNet-50] using the ResNet-D improvements from He et al. (2019) and
the antialiased rect-2 blur pooling from Zhang (2019). We also replace the global
average pooling layer with an attention pooling mechanism."

In code (names and state_dict keys as OpenAI's clip/model.py):
- ResNet-D stem: three 3x3 convolutions instead of one 7x7, then an average pool.
- Anti-aliasing: every convolution of a Bottleneck has stride 1 (the stem's first
  convolution is the only one with stride 2); where a block downsamples, a 2x2
  average pool (the rect-2 blur) comes before conv3 and before the 1x1 shortcut
  convolution.
- AttentionPool2d: one multi-head attention layer whose query is the mean of
  the final feature map, instead of global average pooling.
"""
from collections import OrderedDict

from . import backend, nn
from . import functional as F
from .autograd import concat


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> [avgpool] -> 1x1 residual block, anti-aliased (Zhang 2019).

    inplanes -> planes * 4 channels; stride 2 halves H and W with an average pool
    instead of a strided convolution.
    forward(x (N, inplanes, H, W)) -> (N, planes * 4, H / stride, W / stride).
    """
    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        # all convolutions have stride 1; an avgpool follows the second one when stride > 1
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()

        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()

        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()

        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU()

        self.downsample = None
        self.stride = stride
        if stride > 1 or inplanes != planes * Bottleneck.expansion:
            # the shortcut also pools first (ResNet-D), then a 1x1 convolution with stride 1.
            # Keys "-1", "0", "1" as OpenAI's: downsample.0.weight, downsample.1.running_mean, ...
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x):
        identity = x
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """Attention pooling: the mean feature queries all positions (Section 2.4).

    spacial_dim: H = W of the feature map (input_resolution / 32); embed_dim: C;
    the query is the mean token only, attending over [mean; HW tokens] + positional
    embeddings, with separate q/k/v projections and an output projection c_proj
    (OpenAI's keys).
    forward(x (N, C, H, W)) -> (N, output_dim).
    """
    def __init__(self, spacial_dim, embed_dim, num_heads, output_dim=None):
        if embed_dim % num_heads:
            raise ValueError(f"AttentionPool2d: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.positional_embedding = nn.Parameter(
            backend.randn(spacial_dim ** 2 + 1, embed_dim, std=embed_dim ** -0.5))
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads
        self.spacial_dim = spacial_dim

    def forward(self, x):
        N, C, H, W = x.shape
        if H * W + 1 != self.positional_embedding.shape[0]:
            raise ValueError(f"AttentionPool2d: feature map of shape {x.shape} needs "
                             f"{self.spacial_dim}x{self.spacial_dim} positions")
        h = self.num_heads
        x = x.reshape(N, C, H * W).transpose(0, 2, 1)               # (N, HW, C)
        x = concat([x.mean(axis=1, keepdims=True), x], axis=1)     # (N, HW+1, C): the mean token first
        x = x + self.positional_embedding                           # (N, HW+1, C)
        q = nn.split_heads(self.q_proj(x[:, :1]), h)               # (N, h, 1, C/h): only the mean token asks
        k = nn.split_heads(self.k_proj(x), h)                       # (N, h, HW+1, C/h)
        v = nn.split_heads(self.v_proj(x), h)                       # (N, h, HW+1, C/h)
        out = F.scaled_dot_product_attention(q, k, v)               # (N, h, 1, C/h)
        out = nn.merge_heads(out).reshape(N, C)                     # (N, C)
        return self.c_proj(out)                                     # (N, output_dim)


class ModifiedResNet(nn.Module):
    """CLIP's ResNet: ResNet-D stem, anti-aliased Bottlenecks, attention pooling.

    layers: blocks per stage, e.g. (3, 4, 6, 3) for RN50; width: stem width (64 for
    RN50); the last stage has width * 32 channels, pooled by `heads`-head attention
    into output_dim features.
    forward(x (N, 3, R, R)) -> (N, output_dim), R = input_resolution (a multiple of 32).
    """
    def __init__(self, layers, output_dim, heads, input_resolution=224, width=64):
        self.output_dim = output_dim
        self.input_resolution = input_resolution

        # the 3-layer stem (ResNet-D): 3x3 convs, the first with stride 2, then a 2x2 average pool
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU()
        self.avgpool = nn.AvgPool2d(2)

        # residual stages; _inplanes tracks the channel count while building them
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)

        embed_dim = width * 32  # the ResNet feature dimension
        self.attnpool = AttentionPool2d(input_resolution // 32, embed_dim, heads, output_dim)

    def _make_layer(self, planes, blocks, stride=1):
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))  # (N, width/2, R/2, R/2)
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))  # (N, width, R/2, R/2)
        return self.avgpool(x)                   # (N, width, R/4, R/4)

    def forward(self, x):
        x = self.stem(x)
        x = self.layer1(x)    # (N, width*4, R/4, R/4)
        x = self.layer2(x)    # (N, width*8, R/8, R/8)
        x = self.layer3(x)    # (N, width*16, R/16, R/16)
        x = self.layer4(x)    # (N, width*32, R/32, R/32)
        return self.attnpool(x)


__all__ = ["AttentionPool2d", "Bottleneck", "ModifiedResNet"]
