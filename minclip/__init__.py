"""minclip: CLIP (Radford et al., 2021) from scratch on NumPy, with CuPy as a drop-in GPU backend."""
__version__ = "0.1.0"

from . import backend
from .autograd import Function, Tensor, concat, enable_grad, no_grad, split, stack, using_config
from .backend import get_array_module, to_numpy, use
from .gradcheck import gradcheck


def tokenize(texts, context_length=77, truncate=False, tokenizer=None):
    """Strings -> int64 token array (N, context_length); see minclip.tokenizer.tokenize."""
    from .tokenizer import tokenize as _tokenize  # imported lazily: ftfy/regex load slowly
    return _tokenize(texts, context_length=context_length, truncate=truncate, tokenizer=tokenizer)


__all__ = ["Function", "Tensor", "backend", "concat", "enable_grad", "get_array_module", "gradcheck", "no_grad",
           "split", "stack", "to_numpy", "tokenize", "use", "using_config", "__version__"]
