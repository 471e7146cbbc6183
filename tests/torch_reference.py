"""The references minclip is checked against: OpenAI's own code and torchvision, run by PyTorch.

- `openai("model")`: OpenAI's clip/model.py, `openai("simple_tokenizer")`: its tokenizer, both from the
  clip-anytorch package (OpenAI's repository on PyPI), loaded by file path: the package's __init__ imports
  clip/clip.py, which needs torchvision and pkg_resources, and nothing here uses it.
- `torchvision_transforms()`: torchvision.transforms, the preprocessing OpenAI's clip.load returns. Its
  transforms on PIL images are pure Python, but `import torchvision` loads compiled operators that do not
  load beside the CPU torch wheel, so the package is loaded without its __init__ when that import fails.

Install them (what .ci/run does; --no-deps keeps pip from replacing the CPU torch with a CUDA build):

    pip install torch==2.13.0
    pip install clip-anytorch==2.6.0 torchvision==0.28.0 --no-deps

Tests call `require(...)`, which skips with that command when a reference is missing; the benchmarks import
this module directly. minclip itself never imports torch.
"""
import importlib.util
import sys
import types

import numpy as np
import pytest

INSTALL = "pip install torch==2.13.0 && pip install clip-anytorch==2.6.0 torchvision==0.28.0 --no-deps"
_loaded = {}


def _package_folder(name):
    spec = importlib.util.find_spec(name)
    folders = list(spec.submodule_search_locations or []) if spec else []
    if not folders:
        raise ImportError(f"the {name} package is not installed")
    return folders[0]


def openai(module):
    """OpenAI's clip/<module>.py ("model" or "simple_tokenizer") from clip-anytorch, without clip/__init__."""
    if module not in _loaded:
        if module == "model":
            import torch  # noqa: F401  (fail here with torch's own ImportError)
        path = f"{_package_folder('clip')}/{module}.py"
        spec = importlib.util.spec_from_file_location(f"openai_clip_{module}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _loaded[module] = mod
    return _loaded[module]


def torchvision_transforms():
    """torchvision.transforms; loaded without torchvision/__init__ when the compiled operators cannot load."""
    try:
        import torchvision.transforms as T
        return T
    except (ImportError, RuntimeError):
        sys.modules.pop("torchvision", None)
        package = types.ModuleType("torchvision")  # a bare namespace: its transforms need none of __init__'s
        package.__path__ = [_package_folder("torchvision")]
        sys.modules["torchvision"] = package
        import torchvision.transforms as T
        return T


def require(*what):
    """Skip the calling test unless the named references load: "torch" (the default), OpenAI's "model" or
    "simple_tokenizer", "torchvision". Returns torch, or None when only the tokenizer was asked for."""
    what = what or ("torch",)
    try:
        torch = None if what == ("simple_tokenizer",) else __import__("torch")
        for name in what:
            if name == "torchvision":
                torchvision_transforms()
            elif name != "torch":
                openai(name)
    except ImportError as e:
        pytest.skip(f"needs the reference implementations ({e}): {INSTALL}", allow_module_level=True)
    return torch


def TorchCLIP(*args, **kwargs):
    """OpenAI's CLIP (clip/model.py) with the given configuration, in float32."""
    return openai("model").CLIP(*args, **kwargs).float()


def torch_loss(logits_per_image):
    """Figure 3's symmetric cross-entropy in PyTorch."""
    import torch
    labels = torch.arange(logits_per_image.shape[0])
    tf = torch.nn.functional
    return (tf.cross_entropy(logits_per_image, labels) + tf.cross_entropy(logits_per_image.t(), labels)) / 2


def clip_from_minclip(model, context_length=None):
    """OpenAI's CLIP (float32) with the weights of a minclip CLIP. context_length < the model's keeps the
    first positions only, so short captions run without padding, as minclip's encode_text does."""
    import torch
    cfg = dict(model.config)
    sd = model.state_dict()
    if context_length:
        cfg["context_length"] = context_length
        sd["positional_embedding"] = sd["positional_embedding"][:context_length]
    theirs = TorchCLIP(**cfg)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32) if v.dtype.kind == "f" else v)
                            for k, v in sd.items()}, strict=True)
    return theirs
