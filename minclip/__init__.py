"""minclip: CLIP (Radford et al., 2021) from scratch on NumPy, with CuPy as a drop-in GPU backend."""
__version__ = "0.1.0"

from . import backend
from .autograd import Function, Tensor, concat, enable_grad, no_grad, split, stack, using_config
from .backend import get_array_module, to_numpy, use
from .gradcheck import gradcheck
from .pretrained import available_models, load
from .readers import read_state_dict
from .tokenizer import tokenize

__all__ = ["Function", "Tensor", "available_models", "backend", "concat", "enable_grad", "get_array_module",
           "gradcheck", "load", "no_grad", "read_state_dict", "split", "stack", "to_numpy", "tokenize", "use",
           "using_config", "__version__"]
