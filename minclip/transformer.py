"""The Transformer blocks of CLIP: the text encoder and the Vision Transformer.

Radford et al. 2021, Section 2.4: the text encoder is a Transformer (Vaswani et
al. 2017) "with the architecture modifications described in Radford et al.
(2019)" (GPT-2: pre-activation layer norm, masked self-attention), and the image
encoder can be a Vision Transformer (Dosovitskiy et al. 2020) with "an additional
layer normalization to the combined patch and position embeddings before the
transformer".

Names and state_dict keys follow OpenAI's clip/model.py (`ln_1`, `attn`, `mlp.c_fc`,
`resblocks.0`, `class_embedding`, `ln_pre`, `proj`, ...) so checkpoints load by name.
One layout difference: everything here is batch-first, (N, L, D). OpenAI permutes
to (L, N, D) only because torch.nn.MultiheadAttention wanted that layout; our
MultiheadAttention takes (N, L, D), so there is no permute.
"""
from collections import OrderedDict

from . import backend, nn
from .autograd import concat


class ResidualAttentionBlock(nn.Module):
    """Pre-LN Transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    d_model: width D; n_head: heads (D / n_head per head);
    attn_mask: optional additive (M, M) array (0 or -inf), e.g. the causal mask of
    the text encoder. Inputs shorter than M use its top-left (L, L) corner, so one
    mask serves every sequence length up to M.
    forward(x (N, L, D)) -> (N, L, D).
    """
    def __init__(self, d_model, n_head, attn_mask=None):
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", nn.QuickGELU()),  # OpenAI's models were trained with x * sigmoid(1.702 x)
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = nn.LayerNorm(d_model)
        # non-persistent: `.to()` moves and casts it with the parameters, but it stays out of the
        # state_dict (OpenAI's has no mask)
        self.register_buffer("attn_mask", attn_mask, persistent=False)

    def mask_for(self, x):
        """The (L, L) top-left corner of attn_mask in x's dtype and backend (None without a mask).

        After `.to()` the mask already matches the parameters, and the corner is a view; an input of
        another dtype or backend gets a converted copy per call (nothing is mutated in forward).
        """
        if self.attn_mask is None:
            return None
        L, M = x.shape[1], self.attn_mask.shape[0]
        if L > M:
            raise ValueError(f"ResidualAttentionBlock: input has {L} positions but the attention mask "
                             f"covers only {M}")
        return backend.asarray(self.attn_mask[:L, :L], dtype=x.dtype, like=x)

    def attention(self, x):
        return self.attn(x, attn_mask=self.mask_for(x))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))  # pre-LN residual (GPT-2 style)
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    """`layers` ResidualAttentionBlocks of width `width` with `heads` heads, sharing one attn_mask.

    forward(x (N, L, width)) -> (N, L, width).
    """
    def __init__(self, width, layers, heads, attn_mask=None):
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])

    def forward(self, x):
        for block in self.resblocks:
            x = block(x)
        return x


class VisionTransformer(nn.Module):
    """ViT image encoder (Dosovitskiy et al. 2020) as CLIP uses it.

    input_resolution R, patch_size P: the image is cut into (R/P)^2 patches, each
    linearly embedded (conv1, stride P, no bias), a learned class token is prepended,
    position embeddings are added, and the class token's output, layer-normed and
    projected by `proj`, is the image feature.
    forward(x (N, 3, R, R)) -> (N, output_dim).
    """
    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim):
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)

        scale = width ** -0.5  # OpenAI's init for the embeddings and the projection
        grid = input_resolution // patch_size
        self.class_embedding = nn.Parameter(backend.randn(width, std=scale))
        self.positional_embedding = nn.Parameter(backend.randn(grid ** 2 + 1, width, std=scale))
        self.ln_pre = nn.LayerNorm(width)  # Section 2.4: "an additional layer normalization ... before the transformer"

        self.transformer = Transformer(width, layers, heads)

        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(backend.randn(width, output_dim, std=scale))

    def forward(self, x):
        x = self.conv1(x)                                   # (N, width, grid, grid)
        N, W = x.shape[0], x.shape[1]
        x = x.reshape(N, W, -1).transpose(0, 2, 1)          # (N, grid^2, width)
        xp = backend.get_array_module(x.data)
        cls = self.class_embedding + xp.zeros((N, 1, W), x.dtype)  # (N, 1, width): one class token per image
        x = concat([cls, x], axis=1)                        # (N, grid^2 + 1, width)
        x = x + self.positional_embedding
        x = self.ln_pre(x)

        x = self.transformer(x)                             # (N, grid^2 + 1, width)

        x = self.ln_post(x[:, 0, :])                        # (N, width): the class token's output
        return x @ self.proj                                # (N, output_dim)


__all__ = ["ResidualAttentionBlock", "Transformer", "VisionTransformer"]
