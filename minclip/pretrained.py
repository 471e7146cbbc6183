"""Released CLIP weights without PyTorch: OpenAI's model names, and `load`, which is `clip.load`.

    model, preprocess = minclip.load("ViT-B/32")          # ~/.cache/minclip/ViT-B-32.pt; never downloads
    model, preprocess = minclip.load("tiny-vit-shapes")   # the model that ships with minclip
    model, preprocess = minclip.load("logs/run/checkpoints/latest.npz")   # any file minclip.readers reads
    tokens = model.tokenizer(["a photo of a dog"])        # the tokenizer the weights were trained with

The files are read by minclip.readers, which tells the format from the bytes and trusts nothing in them.
"""
import os
import warnings

import numpy as np

from .backend import default_dtype
from .checkpoint import checkpoint_tokenizer, read_checkpoint, resolve, shipped_models
from .model import build_model
from .tokenizer import cache_dir

# OpenAI's model names and the file names its download URLs end with (clip/clip.py, _MODELS)
MODEL_FILES = {"RN50": "RN50.pt", "RN101": "RN101.pt", "RN50x4": "RN50x4.pt", "RN50x16": "RN50x16.pt",
               "RN50x64": "RN50x64.pt", "ViT-B/32": "ViT-B-32.pt", "ViT-B/16": "ViT-B-16.pt",
               "ViT-L/14": "ViT-L-14.pt", "ViT-L/14@336px": "ViT-L-14-336px.pt"}


def available_models():
    """OpenAI's released model names, as `clip.available_models()` lists them."""
    return list(MODEL_FILES)


def model_path(name_or_path):
    """A file path as is; a shipped model's name as its file; an OpenAI model name as its file in
    cache_dir(), which must exist."""
    path = resolve(name_or_path)
    if os.path.isfile(path):
        return path
    if name_or_path in MODEL_FILES:
        path = os.path.join(cache_dir(), MODEL_FILES[name_or_path])
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"no weights for {name_or_path} at {path}; minclip never downloads: copy OpenAI's "
                f"{MODEL_FILES[name_or_path]} there (the clip package saves it as ~/.cache/clip/"
                f"{MODEL_FILES[name_or_path]}), or set MINCLIP_CACHE to the folder that has it")
        return path
    if os.path.splitext(str(name_or_path))[1]:  # a file name, not a model name
        raise FileNotFoundError(f"checkpoint not found: {name_or_path}")
    raise FileNotFoundError(f"{name_or_path!r} is neither a file nor a model name; available_models(): "
                            f"{', '.join(MODEL_FILES)}; shipped with minclip: {', '.join(shipped_models())}")


def load(name_or_path, backend=None, dtype=None):
    """Like clip.load: (model in eval mode, preprocess) from a model name or a weight file; the model's
    `tokenizer` is the one its weights were trained with (stored in minclip checkpoints; OpenAI's merges
    for OpenAI's vocabulary).

    backend: "numpy" or "cupy" (default: the current one). dtype: None/"float32" upcasts fp16
    weights to float32 (what NumPy on a CPU runs fast); "float16" keeps half precision (for CuPy).
    preprocess maps a PIL image to a float32 (3, R, R) array, R = model.visual.input_resolution.
    """
    dtype = np.dtype(dtype or np.float32)
    if dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"load: dtype {dtype} is not a float type; use 'float32' or 'float16'")
    path = model_path(name_or_path)
    weights, state = read_checkpoint(path)
    with default_dtype(np.float32 if dtype == np.float16 else dtype):
        model = build_model(weights)
    try:
        model.tokenizer = checkpoint_tokenizer(state, model.vocab_size, path)
    except FileNotFoundError as e:  # OpenAI's merges file is not on this machine: images still work
        warnings.warn(f"load: {e}; model.tokenizer is None", stacklevel=2)
    if backend is not None:
        model.to(backend)  # moves the weights; the process-wide default backend stays as it is
    if dtype == np.float16:
        model.to(np.float16)
    from .data import clip_preprocess  # here: `import minclip` needs neither PIL nor the data package
    return model, clip_preprocess(model.visual.input_resolution)


__all__ = ["MODEL_FILES", "available_models", "load", "model_path"]
