"""Layers: `Module` and the building blocks CLIP's encoders are made of.

The names, shapes and state_dict keys follow PyTorch's torch.nn, so OpenAI's
CLIP checkpoints load by name (`visual.transformer.resblocks.0.attn.in_proj_weight`).
One deliberate difference: `MultiheadAttention` takes batch-first input
(N, L, E) and returns only the output, not (output, weights).
"""
import math
from collections import OrderedDict

import numpy as np

from . import backend
from . import functional as F
from .autograd import Tensor, split


class Parameter(Tensor):
    """A Tensor that a Module trains: requires_grad defaults to True."""
    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)


class Module:
    """Base class. Parameters, buffers (non-trained arrays such as BatchNorm's running
    statistics) and sub-modules are found from the attributes, in assignment order."""
    training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def register_buffer(self, name, array, persistent=True):
        """An array that is not trained but moves with `.to()`: BatchNorm's running statistics,
        or (persistent=False, left out of the state_dict as in torch) the text encoder's causal mask."""
        self.__dict__.setdefault("_buffers", {})[name] = persistent
        setattr(self, name, array)

    # --- the module tree
    def named_children(self):
        for name, v in vars(self).items():
            if isinstance(v, Module):
                yield name, v

    def children(self):
        return (m for _, m in self.named_children())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self.named_children():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix=""):
        for mod_name, m in self.named_modules(prefix):
            for name, v in vars(m).items():
                if isinstance(v, Parameter):
                    yield (f"{mod_name}.{name}" if mod_name else name), v

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, persistent_only=False):
        """(state_dict key, owning module, attribute name) of every buffer."""
        for mod_name, m in self.named_modules():
            for name, persistent in m.__dict__.get("_buffers", {}).items():
                if persistent or not persistent_only:
                    yield (f"{mod_name}.{name}" if mod_name else name), m, name

    def num_parameters(self):
        return sum(p.size for p in self.parameters())

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    # --- saving and loading
    def state_dict(self):
        """Name -> NumPy array (a host copy) for every parameter and buffer, PyTorch's key names."""
        sd = OrderedDict((k, backend.to_numpy(p.data).copy()) for k, p in self.named_parameters())
        for k, m, name in self.named_buffers(persistent_only=True):
            sd[k] = backend.to_numpy(getattr(m, name)).copy()
        return sd

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into parameters and buffers by name; fp16 is upcast to the parameter dtype.

        Mismatched shapes always raise; missing or unexpected keys raise when `strict`.
        Everything is checked before anything is written, so a failed load changes nothing.
        """
        params = dict(self.named_parameters())
        buffers = {k: (m, name) for k, m, name in self.named_buffers(persistent_only=True)}
        missing = [k for k in list(params) + list(buffers) if k not in state_dict]
        unexpected = [k for k in state_dict if k not in params and k not in buffers]
        if strict and (missing or unexpected):
            raise ValueError(f"load_state_dict: missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
                             f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
        for k, v in state_dict.items():
            if k in params or k in buffers:
                target = params[k].data if k in params else getattr(*buffers[k])
                if tuple(np.shape(v)) != tuple(target.shape):
                    raise ValueError(f"load_state_dict: {k} has shape {tuple(np.shape(v))} in the state_dict "
                                     f"but {tuple(target.shape)} in the model")
        for k, v in state_dict.items():
            if k in params:
                params[k].data = _copy_in(v, params[k].data)
            elif k in buffers:
                m, name = buffers[k]
                setattr(m, name, _copy_in(v, getattr(m, name)))
        return missing, unexpected

    def to(self, target):
        """Move parameters, gradients and buffers to a backend ("numpy" or "cupy"), or cast the
        floating ones to a dtype. The default backend for new arrays stays as it is (see backend.py)."""
        if isinstance(target, str) and target.lower() in backend.NAMES:
            xp = backend.array_module(target)  # raises BackendError before anything has moved
            move = backend.to_numpy if xp is np else xp.asarray
        else:
            try:
                dtype = np.dtype(target)
            except TypeError:
                raise ValueError(f"Module.to: {target!r} is neither a backend {backend.NAMES} "
                                 "nor a dtype (np.float32, 'float64', ...)") from None

            def move(a):
                return a.astype(dtype) if a.dtype.kind == "f" else a
        for p in self.parameters():
            p.data = move(p.data)
            p.grad = None if p.grad is None else move(p.grad)
        for _, m, name in self.named_buffers():
            if getattr(m, name) is not None:
                setattr(m, name, move(getattr(m, name)))
        return self


def _copy_in(v, target):
    """A copy of array `v` in the dtype and on the backend of the array `target` it replaces: a loaded
    model must never share memory with the state_dict it came from (in-place optimizer steps would
    write into the caller's arrays)."""
    if backend.is_array(v) and backend.get_array_module(v) is backend.get_array_module(target):
        return v.astype(target.dtype, copy=True)  # already on that backend: no round trip through the host
    return backend.asarray(np.array(backend.to_numpy(v), dtype=target.dtype), like=target)


# ----------------------------------------------------------------------------- initialisation
# (re)initialising a parameter keeps it on its backend; only a new one goes to the default backend
def uniform_(p, bound, rng=None):
    p.data = backend.asarray(backend.get_rng(rng).uniform(-bound, bound, p.shape), dtype=p.dtype, like=p.data)


def normal_(p, std, rng=None):
    p.data = backend.randn(*p.shape, std=std, rng=rng, dtype=p.dtype, like=p.data)


def constant_(p, value):
    p.data = backend.get_array_module(p.data).full(p.shape, value, dtype=p.dtype)


def _param(*shape, value=0.0):
    return Parameter(backend.xp.full(shape, value, dtype=backend.get_default_dtype()))


# ----------------------------------------------------------------------------- layers
class Linear(Module):
    """y = x W^T + b, W (out_features, in_features); PyTorch's default uniform init."""
    def __init__(self, in_features, out_features, bias=True):
        self.weight = _param(out_features, in_features)
        uniform_(self.weight, 1 / math.sqrt(in_features))
        self.bias = None
        if bias:
            self.bias = _param(out_features)
            uniform_(self.bias, 1 / math.sqrt(in_features))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class LayerNorm(Module):
    """Normalise the last axis; statistics in float32 or wider even for fp16 input (as CLIP's subclass)."""
    def __init__(self, normalized_shape, eps=1e-5):
        self.weight = _param(normalized_shape, value=1.0)
        self.bias = _param(normalized_shape)
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)


class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        self.weight = _param(out_channels, in_channels, kernel_size, kernel_size)
        bound = 1 / math.sqrt(in_channels * kernel_size * kernel_size)
        uniform_(self.weight, bound)
        self.bias = None
        if bias:
            self.bias = _param(out_channels)
            uniform_(self.bias, bound)
        self.stride, self.padding = stride, padding

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


class BatchNorm2d(Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.weight = _param(num_features, value=1.0)
        self.bias = _param(num_features)
        self.register_buffer("running_mean", backend.xp.zeros(num_features, backend.get_default_dtype()))
        self.register_buffer("running_var", backend.xp.ones(num_features, backend.get_default_dtype()))
        self.register_buffer("num_batches_tracked", backend.xp.zeros((), np.int64))
        self.eps, self.momentum = eps, momentum

    def forward(self, x):
        if self.training:
            self.num_batches_tracked = self.num_batches_tracked + 1
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class Embedding(Module):
    def __init__(self, num_embeddings, embedding_dim):
        self.weight = _param(num_embeddings, embedding_dim)
        normal_(self.weight, 1.0)

    def forward(self, ids):
        return F.embedding(ids, self.weight)


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class GELU(Module):
    def forward(self, x):
        return F.gelu(x)


class QuickGELU(Module):
    """x * sigmoid(1.702 x), the activation of OpenAI's released CLIP models."""
    def forward(self, x):
        return F.quick_gelu(x)


class Identity(Module):
    def forward(self, x):
        return x


class Sequential(Module):
    """Applies modules in order. Takes modules (named "0", "1", ...) or one OrderedDict of named ones."""
    def __init__(self, *modules):
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            items = modules[0].items()
        else:
            items = ((str(i), m) for i, m in enumerate(modules))
        for name, m in items:
            setattr(self, name, m)

    def __iter__(self):
        return self.children()

    def __getitem__(self, i):
        return list(self.children())[i]

    def __len__(self):
        return len(list(self.children()))

    def forward(self, x):
        for m in self:
            x = m(x)
        return x


class ModuleList(Sequential):
    """A list of modules named "0", "1", ... (no forward of its own)."""
    def __init__(self, modules=()):
        super().__init__(*modules)

    def forward(self, x):
        raise TypeError("ModuleList has no forward; iterate over it")


def split_heads(x, num_heads):
    """(N, L, E) -> (N, num_heads, L, E / num_heads): each head attends with its own slice of E."""
    N, L, E = x.shape
    return x.reshape(N, L, num_heads, E // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(N, h, L, E / h) -> (N, L, E), the inverse of split_heads."""
    N, h, L, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(N, L, h * d)


class MultiheadAttention(Module):
    """Multi-head attention with PyTorch's packed parameters (in_proj_weight (3E, E),
    in_proj_bias (3E,), out_proj), so torch checkpoints load as they are.

    forward(query (N, Lq, E), key=None, value=None, attn_mask=None) -> (N, Lq, E); batch first.
    key defaults to query and value to key (self-attention); attn_mask is additive, (Lq, Lk).
    """
    def __init__(self, embed_dim, num_heads):
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.in_proj_weight = _param(3 * embed_dim, embed_dim)
        uniform_(self.in_proj_weight, math.sqrt(6 / (4 * embed_dim)))  # xavier_uniform as torch
        self.in_proj_bias = _param(3 * embed_dim)
        self.out_proj = Linear(embed_dim, embed_dim)
        constant_(self.out_proj.bias, 0.0)

    def forward(self, query, key=None, value=None, attn_mask=None):
        E, h = self.embed_dim, self.num_heads
        if query.shape[-1] != E:
            raise ValueError(f"MultiheadAttention: query has shape {query.shape}, expected (N, L, {E})")
        if key is None and value is None:  # self-attention: one matmul for q, k and v
            q, k, v = split(F.linear(query, self.in_proj_weight, self.in_proj_bias), 3)
        else:
            w_q, w_k, w_v = split(self.in_proj_weight.T, 3)  # (E, E) each, already transposed
            b_q, b_k, b_v = split(self.in_proj_bias, 3)
            key = query if key is None else key
            value = key if value is None else value
            q, k, v = query @ w_q + b_q, key @ w_k + b_k, value @ w_v + b_v
        q, k, v = split_heads(q, h), split_heads(k, h), split_heads(v, h)  # (N, h, L, E/h)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask)          # (N, h, Lq, E/h)
        return self.out_proj(merge_heads(out))                             # (N, Lq, E)
