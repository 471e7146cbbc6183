"""minclip: CLIP (Radford et al., 2021) from scratch on NumPy, with CuPy as a drop-in GPU backend."""
__version__ = "0.1.0"

from . import backend
from .autograd import Function, Tensor, concat, no_grad, stack
from .backend import get_array_module, to_numpy, use
from .gradcheck import gradcheck


def tokenize(texts, context_length=77, truncate=False, tokenizer=None):
    """Strings -> int64 token array (N, context_length); see minclip.tokenizer.tokenize."""
    from .tokenizer import tokenize as _tokenize  # imported lazily: ftfy/regex load slowly
    return _tokenize(texts, context_length=context_length, truncate=truncate, tokenizer=tokenizer)


def load(name_or_path, backend=None, dtype=None):
    """(model, preprocess) from released CLIP weights, like clip.load; see minclip.pretrained.load."""
    from .pretrained import load as _load  # imported lazily, like tokenize
    return _load(name_or_path, backend=backend, dtype=dtype)


def available_models():
    """OpenAI's model names that load() accepts: RN50, ..., ViT-L/14@336px."""
    from .pretrained import available_models as _available_models
    return _available_models()


__all__ = ["Function", "Tensor", "available_models", "backend", "concat", "get_array_module", "gradcheck", "load",
           "no_grad", "stack", "to_numpy", "tokenize", "use", "__version__"]
