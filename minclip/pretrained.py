"""Released CLIP weights without PyTorch: readers for the files people already have, and `load`.

Formats, recognised from the file's bytes (`read_state_dict`):

- `torch.save` zip files (PyTorch >= 1.6; open_clip checkpoints, `torch.save(model.state_dict())`):
  a zip whose one top folder holds `data.pkl` (the pickled object) and `data/<key>` (one raw
  little-endian storage per key). Each tensor in the pickle is
  `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, its storage a persistent
  id `('storage', torch.HalfStorage, key, location, numel)`.
- TorchScript archives (`torch.jit.save`; OpenAI's ViT-B-32.pt etc., what `clip.load` downloads):
  the same `data.pkl` + `data/<key>`, plus `code/` (the TorchScript source, never run here) and
  `constants.pkl`. `data.pkl` pickles the module tree as objects of classes `__torch__.…`; we
  rebuild them as inert attribute holders and read which attributes are parameters and buffers
  from the `__parameters__ = [...]` / `__buffers__ = [...]` lines of each class in `code/`.
- Hugging Face `safetensors` of CLIPModel (`vision_model.*`, `text_model.*`), renamed to OpenAI's keys.
- `.npz`: a minclip checkpoint or a plain `np.savez(path, **state_dict)`.

The unpickler is restricted: `find_class` hands out only the tensor/storage rebuilders,
OrderedDict and the inert `__torch__` holders; any other global (os.system, builtins.eval, ...)
raises PretrainedError before the pickle can call it, so a malicious file runs nothing.
"""
import json
import os
import pickle
import re
import struct
import zipfile
from collections import OrderedDict

import numpy as np

from .backend import default_dtype
from .model import build_model
from .tokenizer import cache_dir

# OpenAI's model names and the file names its download URLs end with (clip/clip.py, _MODELS)
MODEL_FILES = {"RN50": "RN50.pt", "RN101": "RN101.pt", "RN50x4": "RN50x4.pt", "RN50x16": "RN50x16.pt",
               "RN50x64": "RN50x64.pt", "ViT-B/32": "ViT-B-32.pt", "ViT-B/16": "ViT-B-16.pt",
               "ViT-L/14": "ViT-L-14.pt", "ViT-L/14@336px": "ViT-L-14-336px.pt"}

# torch's legacy typed-storage class names -> element dtype (BFloat16 is widened to float32 on read)
STORAGE_DTYPES = {"DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
                  "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
                  "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
                  "BoolStorage": np.bool_}


class PretrainedError(ValueError):
    """A weight file is corrupt, unsafe, or in a format minclip cannot read."""


def available_models():
    """OpenAI's released model names, as `clip.available_models()` lists them."""
    return list(MODEL_FILES)


# ----------------------------------------------------------------------------- restricted unpickler
class _StorageType:
    """Stands for `torch.FloatStorage` etc. in a pickle: only its name is used."""

    def __init__(self, name):
        self.name = name


class ScriptObject:
    """Inert stand-in for a TorchScript class (`__torch__.…`): it keeps the pickled attributes in
    `self.attributes` and has no other behaviour, so building one runs none of the archive's code."""
    qualname = ""

    def __setstate__(self, state):
        self.attributes = dict(state) if isinstance(state, dict) else {"__state__": state}


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    """torch._utils._rebuild_tensor_v2: the view (offset, size, stride in elements) of a 1-d storage, copied."""
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or storage_offset < 0 or min(stride, default=0) < 0:
        raise PretrainedError(f"tensor with size {size}, stride {stride}, offset {storage_offset}: not a valid view")
    if 0 not in size:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.size:
            raise PretrainedError(f"tensor of size {size} reads element {last} of a storage with {storage.size}: "
                                  "the file is corrupt or truncated")
    view = np.lib.stride_tricks.as_strided(storage[storage_offset:], size,
                                           [s * storage.itemsize for s in stride], writeable=False)
    return np.array(view)  # own memory, contiguous, writable


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data  # an nn.Parameter is just its tensor here


class _Unpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only the globals a weight file needs (see the module docstring)."""

    def __init__(self, file, read_storage, path, script=False):
        super().__init__(file)
        self.read_storage, self.path, self.script = read_storage, path, script
        self.classes = {}

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if self.script and (module == "__torch__" or module.startswith("__torch__.")):
            qualname = f"{module}.{name}"
            if qualname not in self.classes:
                self.classes[qualname] = type(name, (ScriptObject,), {"qualname": qualname})
            return self.classes[qualname]
        raise PretrainedError(f"{self.path}: the pickle names the global {module}.{name}, which minclip's "
                              "restricted reader does not load (it rebuilds tensors, storages and plain "
                              "containers only), so it stopped and ran nothing; load only files from a source "
                              "you trust")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise PretrainedError(f"{self.path}: unexpected persistent id {pid!r} in the pickle; "
                                  "only ('storage', type, key, location, numel) is read")
        return self.read_storage(pid[1].name, str(pid[2]), int(pid[4]))


# ----------------------------------------------------------------------------- torch zip archives
def _read_torch_zip(zf, path):
    """Unpickle `<top>/data.pkl` of a torch.save or torch.jit.save zip; returns (object, prefix)."""
    pkl = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
    if not pkl:
        raise PretrainedError(f"{path}: a zip file without data.pkl; not a PyTorch checkpoint")
    prefix = pkl[0][:-len("data.pkl")]  # "archive/", "ViT-B-32/", ... whatever the top folder is called
    names = set(zf.namelist())
    byteorder = zf.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
    storages = {}

    def read_storage(type_name, key, numel):
        if key not in storages:
            name = f"{prefix}data/{key}"
            if name not in names:
                raise PretrainedError(f"{path}: storage {name} is missing; the file is truncated or corrupt")
            dtype = np.dtype(STORAGE_DTYPES[type_name]).newbyteorder("<" if byteorder == "little" else ">")
            raw = zf.read(name)
            if len(raw) < numel * dtype.itemsize:
                raise PretrainedError(f"{path}: storage {name} has {len(raw)} bytes, {numel} elements need "
                                      f"{numel * dtype.itemsize}; the file is truncated or corrupt")
            a = np.frombuffer(raw, dtype, count=numel).astype(dtype.newbyteorder("="))
            if type_name == "BFloat16Storage":  # bfloat16 is the top half of a float32
                a = (a.astype(np.uint32) << 16).view(np.float32)
            storages[key] = a
        return storages[key]

    script = any(n.startswith(prefix + "code/") for n in names)
    with zf.open(prefix + "data.pkl") as f:
        obj = _Unpickler(f, read_storage, path, script=script).load()
    return obj, prefix, script


def _script_members(zf, prefix):
    """qualname -> set of parameter and buffer names, from the class headers in the archive's code/."""
    members = {}
    for name in zf.namelist():
        if not (name.startswith(prefix + "code/") and name.endswith(".py")):
            continue
        module = name[len(prefix + "code/"):-len(".py")].replace("/", ".")
        source = zf.read(name).decode("utf-8", "replace")
        pattern = r"class (\w+)\(Module\):\n\s*__parameters__ = \[(.*?)\]\n\s*__buffers__ = \[(.*?)\]"
        for cls, params, buffers in re.findall(pattern, source):
            members[f"{module}.{cls}"] = set(re.findall(r'"([^"]+)"', params + buffers))
    return members


def _script_state_dict(obj, members, prefix="", out=None):
    """Walk a tree of ScriptObjects: parameters and buffers under their dotted path (module.state_dict())."""
    out = OrderedDict() if out is None else out
    keep = members.get(obj.qualname)  # None when code/ has no header for the class: keep every tensor
    for name, value in getattr(obj, "attributes", {}).items():
        if isinstance(value, ScriptObject):
            _script_state_dict(value, members, f"{prefix}{name}.", out)
        elif isinstance(value, np.ndarray) and (keep is None or name in keep):
            out[prefix + name] = value
    return out


def _find_state_dict(obj, path):
    """The name -> array dict inside what torch.save pickled: itself, or under "state_dict"/"model"/..."""
    if isinstance(obj, dict):
        arrays = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
        if arrays and len(arrays) >= len(obj) // 2:
            return arrays
        for key in ("state_dict", "model", "model_state_dict", "module", "ema"):
            if isinstance(obj.get(key), dict):
                return _find_state_dict(obj[key], path)
        keys = list(obj)[:10]
    else:
        keys = type(obj).__name__
    raise PretrainedError(f"{path}: found no state_dict in the file (top level: {keys}); expected a dict of "
                          "tensors or one under 'state_dict' or 'model'")


# ----------------------------------------------------------------------------- Hugging Face safetensors
_HF_PREFIXES = [  # (Hugging Face prefix, OpenAI prefix), checked in order
    ("text_model.embeddings.token_embedding.weight", "token_embedding.weight"),
    ("text_model.embeddings.position_embedding.weight", "positional_embedding"),
    ("text_model.final_layer_norm.", "ln_final."),
    ("text_model.encoder.layers.", "transformer.resblocks."),
    ("vision_model.embeddings.class_embedding", "visual.class_embedding"),
    ("vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight"),
    ("vision_model.embeddings.position_embedding.weight", "visual.positional_embedding"),
    ("vision_model.pre_layrnorm.", "visual.ln_pre."),  # sic: "layrnorm" is Hugging Face's spelling
    ("vision_model.post_layernorm.", "visual.ln_post."),
    ("vision_model.encoder.layers.", "visual.transformer.resblocks."),
    ("logit_scale", "logit_scale"),
]
_HF_BLOCK = {"self_attn.out_proj.": "attn.out_proj.", "layer_norm1.": "ln_1.", "layer_norm2.": "ln_2.",
             "mlp.fc1.": "mlp.c_fc.", "mlp.fc2.": "mlp.c_proj."}


def from_hf(hf, path="state_dict"):
    """Hugging Face CLIPModel names -> OpenAI's state_dict. q/k/v (each (W, W)) are stacked into
    in_proj_weight (3W, W) in that order, as nn.MultiheadAttention packs them; the projections are
    Linear weights (E, W) in HF and matrices (W, E) used as x @ proj in OpenAI's code, so transposed."""
    if not any(k.startswith("text_model.") for k in hf) or not any(k.startswith("vision_model.") for k in hf):
        raise PretrainedError(f"{path}: not a Hugging Face CLIPModel file (needs vision_model.* and text_model.* "
                              f"keys; found {list(hf)[:5]}); Hugging Face has CLIP in this format only for the "
                              "ViT models, such as openai/clip-vit-base-patch32")
    sd, qkv = OrderedDict(), {}
    for key, value in hf.items():
        if key.endswith("position_ids"):
            continue  # a buffer of 0..n-1, not a weight
        if key in ("visual_projection.weight", "text_projection.weight"):
            sd["visual.proj" if key.startswith("visual") else "text_projection"] = np.ascontiguousarray(value.T)
            continue
        for hf_prefix, openai_prefix in _HF_PREFIXES:
            if key.startswith(hf_prefix):
                rest = key[len(hf_prefix):]
                break
        else:
            raise PretrainedError(f"{path}: unexpected Hugging Face key {key}; "
                                  "minclip maps CLIPModel's ViT weights only")
        if openai_prefix.endswith("resblocks."):
            layer, rest = rest.split(".", 1)
            block = f"{openai_prefix}{layer}."
            match = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
            if match:
                qkv.setdefault((block, match[2]), {})[match[1]] = value
                continue
            for hf_name, openai_name in _HF_BLOCK.items():
                if rest.startswith(hf_name):
                    rest = openai_name + rest[len(hf_name):]
                    break
            else:
                raise PretrainedError(f"{path}: unexpected Hugging Face key {key}")
            sd[block + rest] = value
        else:
            sd[openai_prefix + rest] = value
    for (block, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise PretrainedError(f"{path}: {block} has only the {sorted(parts)} projections of q, k, v")
        sd[f"{block}attn.in_proj_{kind}"] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    return sd


def _read_safetensors(path):
    from safetensors.numpy import load_file
    try:
        sd = load_file(path)
    except Exception as e:  # the package raises its own SafetensorError for bad headers and short files
        raise PretrainedError(f"{path}: unreadable safetensors file ({type(e).__name__}: {e})") from e
    config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if os.path.exists(config):  # OpenAI's models use QuickGELU; so does minclip, and nothing else
        with open(config) as f:
            act = json.load(f).get("vision_config", {}).get("hidden_act", "quick_gelu")
        if act != "quick_gelu":
            raise PretrainedError(f"{path}: {config} says hidden_act={act!r}; minclip's CLIP uses quick_gelu, "
                                  "as OpenAI's models do, so these weights would give wrong features")
    return from_hf(sd, path) if any(k.startswith("vision_model.") for k in sd) else sd


# ----------------------------------------------------------------------------- entry points
def read_state_dict(path):
    """An OpenAI-style state_dict {name: np.ndarray} from any weight file minclip reads (module docstring).

    Arrays keep the file's dtype (fp16 stays fp16; build_model upcasts). The `module.` prefix of
    DDP / open_clip is stripped. Raises FileNotFoundError, or PretrainedError naming the problem.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    size = os.path.getsize(path)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                if any(n.endswith(".npy") for n in names) and not any(n.endswith("data.pkl") for n in names):
                    sd = None
                else:
                    obj, prefix, script = _read_torch_zip(zf, path)
                    if script:
                        sd = _script_state_dict(obj, _script_members(zf, prefix)) if isinstance(obj, ScriptObject) \
                            else _find_state_dict(obj, path)
                    else:
                        sd = _find_state_dict(obj, path)
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, struct.error, OSError) as e:
            raise PretrainedError(f"{path}: corrupt or truncated file ({type(e).__name__}: {e})") from e
        if sd is None:
            from .checkpoint import load_weights  # inside: checkpoint hands .pt/.safetensors files to this module
            sd = load_weights(path)
    elif len(head) >= 9 and struct.unpack("<Q", head[:8])[0] < size and head[8:9] == b"{":
        sd = _read_safetensors(path)
    elif head[:2] in (b"\x80\x02", b"\x80\x04") or head.startswith(b"\x8a"):
        raise PretrainedError(f"{path}: a legacy (PyTorch < 1.6) torch.save file; re-save it once with a current "
                              "torch: torch.save(torch.load(path), path)")
    else:
        raise PretrainedError(f"{path}: unknown format (starts with {head[:8]!r}); minclip reads torch.save and "
                              "TorchScript .pt files, Hugging Face .safetensors and .npz")
    if sd and all(k.startswith("module.") for k in sd):
        sd = OrderedDict((k[len("module."):], v) for k, v in sd.items())
    if not sd:
        raise PretrainedError(f"{path}: the file holds no weights")
    return sd


def model_path(name_or_path):
    """A file path as is; an OpenAI model name as its file in cache_dir(), which must exist."""
    if os.path.isfile(name_or_path):
        return name_or_path
    if name_or_path in MODEL_FILES:
        path = os.path.join(cache_dir(), MODEL_FILES[name_or_path])
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"no weights for {name_or_path} at {path}; minclip never downloads: copy OpenAI's "
                f"{MODEL_FILES[name_or_path]} there (the clip package saves it as ~/.cache/clip/"
                f"{MODEL_FILES[name_or_path]}), or set MINCLIP_CACHE to the folder that has it")
        return path
    raise FileNotFoundError(f"{name_or_path!r} is neither a file nor a model name; "
                            f"available_models(): {', '.join(MODEL_FILES)}")


def load(name_or_path, backend=None, dtype=None):
    """Like clip.load: (model in eval mode, preprocess) from a model name or a weight file.

    backend: "numpy" or "cupy" (default: the current one). dtype: None/"float32" upcasts fp16
    weights to float32 (what NumPy on a CPU runs fast); "float16" keeps half precision (for CuPy).
    preprocess maps a PIL image to a float32 (3, R, R) array, R = model.visual.input_resolution.
    """
    dtype = np.dtype(dtype or np.float32)
    if dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"load: dtype {dtype} is not a float type; use 'float32' or 'float16'")
    state_dict = read_state_dict(model_path(name_or_path))
    with default_dtype(np.float32 if dtype == np.float16 else dtype):
        model = build_model(state_dict)
    if backend is not None:
        model.to(backend)  # moves the weights; the process-wide default backend stays as it is
    if dtype == np.float16:
        model.to(np.float16)
    from .data import clip_preprocess  # here: `import minclip` needs neither PIL nor the data package
    return model, clip_preprocess(model.visual.input_resolution)


__all__ = ["MODEL_FILES", "PretrainedError", "ScriptObject", "available_models", "from_hf", "load",
           "model_path", "read_state_dict"]
