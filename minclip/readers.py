"""Weight files, read without torch and without trusting them: the format is told from the bytes.

    arrays, kind = read_file(path)       # kind: "torch", "torchscript", "safetensors" or "npz"
    state_dict = read_state_dict(path)   # OpenAI's key names, whatever the file

Formats:
- torch.save zips (PyTorch >= 1.6; open_clip checkpoints, `torch.save(model.state_dict())`): `<top>/data.pkl`
  (the pickled object) and `<top>/data/<key>` (one raw storage per key). Each tensor in the pickle is
  `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, its storage a persistent id
  `('storage', torch.HalfStorage, key, location, numel)`.
- TorchScript archives (`torch.jit.save`; OpenAI's ViT-B-32.pt etc.): the same, plus `code/` (TorchScript
  source, never run: only its `__parameters__ = [...]` / `__buffers__ = [...]` lines are read) and a pickle
  of the module tree, whose `__torch__.…` classes become inert ScriptObjects.
- Hugging Face `safetensors` of CLIPModel (`vision_model.*`, `text_model.*`), renamed to OpenAI's keys.
- `.npz`: a minclip checkpoint (`model/<key>`, `meta`, ...) or a plain `np.savez(path, **state_dict)`.

A file from the internet may be corrupt or built to do harm, so nothing it claims is believed before it
is checked. The unpickler hands out only the tensor rebuilders, OrderedDict and inert stand-ins (any other
global stops it before it can be called); the pickle is scanned first, so a memo index, a nesting depth or
a length it claims cannot make the reader allocate what the file does not hold; every size, stride, offset
and type of a tensor view is validated before an array is made; an archive entry is refused before it is
decompressed if it is encrypted, compressed by an unknown method, or larger than the budget; and all that
the reader materialises together stays under a budget of 2 x the file's size + 64 MiB. Whatever is wrong,
the caller gets one CheckpointError naming the file and the problem.
"""
import io
import json
import os
import pickle
import pickletools
import re
import reprlib
import struct
import zipfile
from collections import OrderedDict

import numpy as np

# torch's typed-storage class names -> element dtype (BFloat16 is read as uint16 and widened to float32)
STORAGE_DTYPES = {"DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
                  "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
                  "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
                  "BoolStorage": np.bool_}
MAX_PICKLE_STACK = 100_000  # items on the unpickler's stack (a state_dict of 1,000 tensors needs ~2,000)
MAX_PICKLE_MARKS = 1_000    # nested MARKs (containers being built inside each other)
MAX_TREE_DEPTH = 64         # nesting of dicts or TorchScript modules walked to find the weights
_short = reprlib.Repr()     # what the file says, quoted in an error: never deep or long
_short.maxlevel, _short.maxstring, _short.maxother = 2, 60, 60


class CheckpointError(ValueError):
    """A weight or checkpoint file is missing a part, corrupt, unsafe, or in a format minclip cannot read;
    the message names the file and what is wrong in it."""


class _Budget:
    """The bytes a reader may still materialise: 2 x the file's size + 64 MiB (decompression and
    dtype widening need some room; a file that asks for more is lying about its contents)."""

    def __init__(self, path):
        self.path, self.left = path, 2 * os.path.getsize(path) + (64 << 20)

    def take(self, nbytes, what):
        if nbytes > self.left:
            raise CheckpointError(f"{self.path}: {what} needs {nbytes:,} bytes, more than a file of this size "
                                  f"can hold ({self.left:,} left to read); the file is corrupt or hostile")
        self.left -= nbytes


# ----------------------------------------------------------------------------- zip entries
def _read_entry(zf, info, budget, path):
    """The bytes of one zip member, refused before decompression when they could not be honest."""
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{path}: the entry {info.filename} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise CheckpointError(f"{path}: the entry {info.filename} uses compression method {info.compress_type}; "
                              "weight files are stored or deflated")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise CheckpointError(f"{path}: the stored entry {info.filename} claims {info.file_size:,} bytes but "
                              f"holds {info.compress_size:,}")
    budget.take(info.file_size, f"the entry {info.filename}")
    buf = bytearray(info.file_size)  # writable, so arrays can be views of it instead of copies
    with zf.open(info) as f:  # zipfile stops at file_size and checks the CRC
        n = f.readinto(buf)
    if n != info.file_size:
        raise CheckpointError(f"{path}: the entry {info.filename} holds {n:,} bytes, not {info.file_size:,}")
    return buf


def _entry(zf, name, budget, path):
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise CheckpointError(f"{path}: {name} is missing; the file is truncated or corrupt") from None
    return _read_entry(zf, info, budget, path)


# ----------------------------------------------------------------------------- the restricted unpickler
class _StorageType:
    """Stands for `torch.FloatStorage` etc. in a pickle: only its name is used, and it cannot be changed."""
    __slots__ = ("name", "path")

    def __init__(self, name, path):
        self.name, self.path = name, path

    def __setstate__(self, state):
        raise CheckpointError(f"{self.path}: the pickle tries to modify the storage type {self.name}")


class ScriptObject:
    """Inert stand-in for a TorchScript class (`__torch__.…`): it keeps the pickled attributes in
    `self.attributes` and has no other behaviour, so building one runs none of the archive's code."""
    qualname = ""

    def __setstate__(self, state):
        self.attributes = dict(state) if isinstance(state, dict) else {"__state__": state}


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


class _Rebuild:
    """torch._utils._rebuild_tensor_v2 and _rebuild_parameter, as the pickle may call them: a tensor view
    (offset, size, stride, in elements) of a 1-d storage, validated, then copied."""
    __slots__ = ("budget", "path", "parameter")

    def __init__(self, budget, path, parameter=False):
        self.budget, self.path, self.parameter = budget, path, parameter

    def __setstate__(self, state):
        raise CheckpointError(f"{self.path}: the pickle tries to modify a tensor rebuilder")

    def __call__(self, storage, *args):
        if self.parameter:  # _rebuild_parameter(data, requires_grad, backward_hooks): a Parameter is its data
            if not isinstance(storage, np.ndarray):
                raise CheckpointError(f"{self.path}: a parameter of type {type(storage).__name__}, not a tensor")
            return storage
        if len(args) < 3:
            raise CheckpointError(f"{self.path}: a tensor with {len(args) + 1} arguments, expected storage, "
                                  "offset, size and stride")
        offset, size, stride = args[:3]
        if not isinstance(storage, np.ndarray):
            raise CheckpointError(f"{self.path}: a tensor whose storage is a {type(storage).__name__}")
        ok = (_is_int(offset) and isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list))
              and all(_is_int(n) for n in size) and all(_is_int(s) for s in stride) and len(size) == len(stride)
              and len(size) <= 32)
        if not ok:
            raise CheckpointError(f"{self.path}: a tensor view with offset {_short.repr(offset)}, size "
                                  f"{_short.repr(size)} and stride {_short.repr(stride)}: not integers")
        if offset < 0 or min(size, default=0) < 0 or min(stride, default=0) < 0:
            raise CheckpointError(f"{self.path}: a tensor view with offset {offset}, size {tuple(size)} and stride "
                                  f"{tuple(stride)}: negative")
        numel = int(np.prod(size, dtype=object)) if size else 1
        if numel:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))  # exact: Python ints
            if last >= storage.size:
                raise CheckpointError(f"{self.path}: a tensor of size {tuple(size)} reads element {last:,} of a "
                                      f"storage with {storage.size:,}; the file is truncated or corrupt")
        self.budget.take(numel * storage.itemsize, f"a tensor of size {tuple(size)}")
        strides = [s * storage.itemsize if n > 1 and numel else 0 for n, s in zip(size, stride)]  # others unused
        view = np.lib.stride_tricks.as_strided(storage[offset:], size, strides, writeable=False)
        return np.array(view)  # own memory, contiguous, writable


def _check_pickle(data, path):
    """Walk the pickle's opcodes without building anything: lengths must fit in the data, memo indices
    must not run ahead of the opcodes (the unpickler sizes its memo by them) and the stack and its marks
    must stay shallow."""
    depth, marks, count = 0, [], 0
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            count += 1
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET") and \
                    (not _is_int(arg) or not 0 <= arg <= count):
                raise CheckpointError(f"{path}: the pickle uses memo index {_short.repr(arg)} after {count} "
                                      "opcodes; the file is corrupt or hostile")
            if op.name == "MARK":
                marks.append(depth)
            elif pickletools.markobject in op.stack_before:
                if not marks:
                    raise CheckpointError(f"{path}: the pickle's {op.name} has no MARK to pop to")
                depth = marks.pop() - op.stack_before.index(pickletools.markobject) + len(op.stack_after)
            else:
                depth += len(op.stack_after) - len(op.stack_before)
            if depth > MAX_PICKLE_STACK or len(marks) > MAX_PICKLE_MARKS:
                raise CheckpointError(f"{path}: the pickle nests deeper than {MAX_PICKLE_MARKS} containers or "
                                      f"stacks more than {MAX_PICKLE_STACK:,} items; the file is corrupt or hostile")
    except ValueError as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: the pickle is corrupt ({e})") from None


class _Unpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only the globals a weight file needs (see the module docstring)."""

    def __init__(self, data, read_storage, budget, path, script):
        super().__init__(io.BytesIO(data))
        self.read_storage, self.path, self.script = read_storage, path, script
        self.globals = {("torch._utils", "_rebuild_tensor_v2"): _Rebuild(budget, path),
                        ("torch._utils", "_rebuild_parameter"): _Rebuild(budget, path, parameter=True),
                        ("collections", "OrderedDict"): OrderedDict}
        self.classes = {}

    def find_class(self, module, name):
        if (module, name) in self.globals:
            return self.globals[module, name]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, self.path)
        if self.script and (module == "__torch__" or module.startswith("__torch__.")):
            qualname = f"{module}.{name}"
            if qualname not in self.classes:
                self.classes[qualname] = type(name, (ScriptObject,), {"qualname": qualname})
            return self.classes[qualname]
        raise CheckpointError(f"{self.path}: the pickle names the global {module[:80]}.{name[:80]}, "
                              "which minclip's restricted reader does not load (it rebuilds tensors, storages and "
                              "plain containers only), so it stopped and ran nothing; load only files from a "
                              "source you trust")

    def persistent_load(self, pid):
        ok = (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
              and isinstance(pid[2], (str, int)) and _is_int(pid[4]) and pid[4] >= 0)
        if not ok:
            raise CheckpointError(f"{self.path}: unexpected persistent id {_short.repr(pid)} in the pickle; only "
                                  "('storage', type, key, location, numel) is read")
        return self.read_storage(pid[1].name, str(pid[2]), pid[4])


# ----------------------------------------------------------------------------- torch zips and TorchScript
def _read_torch_zip(zf, budget, path):
    """(state_dict, "torch" or "torchscript") from a torch.save or torch.jit.save zip."""
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
    prefix = pkl[0][:-len("data.pkl")]  # "archive/", "ViT-B-32/", ... whatever the top folder is called
    byteorder = "little"
    if prefix + "byteorder" in names:
        byteorder = _entry(zf, prefix + "byteorder", budget, path)[:16].decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise CheckpointError(f"{path}: byte order {byteorder!r}; a storage is 'little' or 'big' endian")
    storages = {}

    def read_storage(type_name, key, numel):
        if key not in storages:
            dtype = np.dtype(STORAGE_DTYPES[type_name]).newbyteorder("<" if byteorder == "little" else ">")
            raw = _entry(zf, f"{prefix}data/{key}", budget, path)
            if len(raw) < numel * dtype.itemsize:
                raise CheckpointError(f"{path}: storage {key} has {len(raw):,} bytes, its {numel:,} elements need "
                                      f"{numel * dtype.itemsize:,}; the file is truncated or corrupt")
            a = np.frombuffer(raw, dtype, count=numel)
            if not dtype.isnative:
                budget.take(a.nbytes, f"storage {key} in native byte order")
                a = a.astype(dtype.newbyteorder("="))
            if type_name == "BFloat16Storage":  # bfloat16 is the top half of a float32
                budget.take(2 * a.nbytes, f"storage {key} widened to float32")
                a = (a.astype(np.uint32) << 16).view(np.float32)
            storages[key] = a
        return storages[key]

    script = any(n.startswith(prefix + "code/") for n in names)
    data = _entry(zf, prefix + "data.pkl", budget, path)
    _check_pickle(data, path)
    obj = _Unpickler(data, read_storage, budget, path, script).load()
    if script and isinstance(obj, ScriptObject):
        return _script_state_dict(obj, _script_members(zf, prefix, budget, path), path), "torchscript"
    return _find_state_dict(obj, path), "torchscript" if script else "torch"


def _script_members(zf, prefix, budget, path):
    """qualname -> set of parameter and buffer names, from the class headers in the archive's code/."""
    members = {}
    for info in zf.infolist():
        if not (info.filename.startswith(prefix + "code/") and info.filename.endswith(".py")):
            continue
        module = info.filename[len(prefix + "code/"):-len(".py")].replace("/", ".")
        source = _read_entry(zf, info, budget, path).decode("utf-8", "replace")
        pattern = r"class (\w+)\(Module\):\n\s*__parameters__ = \[(.*?)\]\n\s*__buffers__ = \[(.*?)\]"
        for cls, params, buffers in re.findall(pattern, source):
            members[f"{module}.{cls}"] = set(re.findall(r'"([^"]+)"', params + buffers))
    return members


def _script_state_dict(root, members, path):
    """Walk the tree of ScriptObjects: parameters and buffers under their dotted path (module.state_dict())."""
    out, stack = OrderedDict(), [(root, "", 0)]
    while stack:
        obj, prefix, depth = stack.pop()
        if depth > MAX_TREE_DEPTH:
            raise CheckpointError(f"{path}: the TorchScript module tree is nested deeper than {MAX_TREE_DEPTH}")
        keep = members.get(obj.qualname)  # None when code/ has no header for the class: keep every tensor
        children = []
        for name, value in getattr(obj, "attributes", {}).items():
            if isinstance(value, ScriptObject):
                children.append((value, f"{prefix}{name}.", depth + 1))
            elif isinstance(value, np.ndarray) and (keep is None or name in keep):
                out[prefix + name] = value
        stack.extend(reversed(children))  # depth-first, in the order of the attributes
    return out


def _find_state_dict(obj, path):
    """The name -> array dict inside what torch.save pickled: itself, or under "state_dict"/"model"/..."""
    for _ in range(MAX_TREE_DEPTH):
        if not isinstance(obj, dict):
            break
        arrays = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, np.ndarray)}
        if arrays and len(arrays) >= len(obj) // 2:
            return arrays
        inner = next((obj[k] for k in ("state_dict", "model", "model_state_dict", "module", "ema")
                      if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    top = _short.repr(list(obj)[:10]) if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(f"{path}: found no state_dict in the file (it holds {top}); expected a dict of "
                          "tensors or one under 'state_dict' or 'model'")


# ----------------------------------------------------------------------------- .npz
def _read_npz(zf, budget, path):
    """{name: array} of every .npy member, read with numpy's header parser and nothing allocated that the
    member does not hold (np.load would allocate the shape a header claims before reading the data)."""
    out = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            continue
        name = info.filename[:-len(".npy")]
        raw = _read_entry(zf, info, budget, path)
        f = io.BytesIO(raw)
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
        except (ValueError, SyntaxError, TypeError) as e:
            raise CheckpointError(f"{path}: the array {name} has a corrupt header ({e})") from None
        if dtype.hasobject:
            raise CheckpointError(f"{path}: the array {name} holds Python objects (a pickle); minclip reads "
                                  "numbers only")
        count, start = int(np.prod(shape, dtype=object)) if shape else 1, f.tell()
        if count * dtype.itemsize > len(raw) - start:
            raise CheckpointError(f"{path}: the array {name} claims shape {shape} of {dtype} but holds "
                                  f"{len(raw) - start:,} bytes; the file is truncated or corrupt")
        a = np.frombuffer(raw, dtype, count=count, offset=start)  # a writable view of the entry's own bytes
        out[name] = a.reshape(shape[::-1]).T if fortran else a.reshape(shape)
    return out


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
        raise CheckpointError(f"{path}: not a Hugging Face CLIPModel file (needs vision_model.* and text_model.* "
                              f"keys; found {list(hf)[:5]}); Hugging Face has CLIP in this format only for the "
                              "ViT models, such as openai/clip-vit-base-patch32")
    sd, qkv = OrderedDict(), {}
    for key, value in hf.items():
        if key.endswith("position_ids"):
            continue  # a buffer of 0..n-1, not a weight
        if key in ("visual_projection.weight", "text_projection.weight"):
            sd["visual.proj" if key.startswith("visual") else "text_projection"] = np.ascontiguousarray(value.T)
            continue
        hf_prefix, openai_prefix = next(((h, o) for h, o in _HF_PREFIXES if key.startswith(h)), (None, None))
        if hf_prefix is None:
            raise CheckpointError(f"{path}: unexpected Hugging Face key {key}; minclip maps CLIPModel's ViT "
                                  "weights only")
        rest = key[len(hf_prefix):]
        if openai_prefix.endswith("resblocks."):
            layer, rest = rest.split(".", 1)
            block = f"{openai_prefix}{layer}."
            match = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
            if match:
                qkv.setdefault((block, match[2]), {})[match[1]] = value
                continue
            hf_name = next((h for h in _HF_BLOCK if rest.startswith(h)), None)
            if hf_name is None:
                raise CheckpointError(f"{path}: unexpected Hugging Face key {key}")
            sd[block + _HF_BLOCK[hf_name] + rest[len(hf_name):]] = value
        else:
            sd[openai_prefix + rest] = value
    for (block, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{path}: {block} has only the {sorted(parts)} projections of q, k, v")
        sd[f"{block}attn.in_proj_{kind}"] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    return sd


def _read_safetensors(path):
    from safetensors.numpy import load_file
    try:
        sd = load_file(path)  # the library checks the header's offsets against the file's length
    except Exception as e:  # it raises its own SafetensorError for bad headers and short files
        raise CheckpointError(f"{path}: unreadable safetensors file ({type(e).__name__}: {e})") from None
    config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if os.path.exists(config):  # OpenAI's models use QuickGELU; so does minclip, and nothing else
        with open(config) as f:
            act = json.load(f).get("vision_config", {}).get("hidden_act", "quick_gelu")
        if act != "quick_gelu":
            raise CheckpointError(f"{path}: {config} says hidden_act={act!r}; minclip's CLIP uses quick_gelu, "
                                  "as OpenAI's models do, so these weights would give wrong features")
    return from_hf(sd, path) if any(k.startswith("vision_model.") for k in sd) else sd


# ----------------------------------------------------------------------------- the dispatcher
def read_file(path):
    """(arrays, kind) of a weight file, its format told from its first bytes whatever its name:
    kind "torch" or "torchscript" (arrays: the state_dict), "safetensors" (the state_dict, HF names mapped
    to OpenAI's), "npz" (every array of the file: a minclip checkpoint's model/..., meta, ... or a plain
    state_dict). Raises FileNotFoundError, or CheckpointError naming the file and the problem."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK"):
        budget = _Budget(path)
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                if any(n.endswith("data.pkl") and n.count("/") <= 1 for n in names):
                    return _read_torch_zip(zf, budget, path)
                if any(n.endswith(".npy") for n in names):
                    return _read_npz(zf, budget, path), "npz"
        except CheckpointError:
            raise
        except Exception as e:  # zipfile's and pickle's own errors on corrupt data: one kind of error for people
            raise CheckpointError(f"{path}: corrupt or truncated file ({type(e).__name__}: "
                                  f"{_short.repr(str(e))})") from None
        raise CheckpointError(f"{path}: a zip file with neither data.pkl (PyTorch) nor .npy arrays (NumPy)")
    size = os.path.getsize(path)
    if len(head) >= 9 and struct.unpack("<Q", head[:8])[0] < size and head[8:9] == b"{":
        return _read_safetensors(path), "safetensors"
    if head[:2] in (b"\x80\x02", b"\x80\x04") or head.startswith(b"\x8a"):
        raise CheckpointError(f"{path}: a legacy (PyTorch < 1.6) torch.save file; re-save it once with a current "
                              "torch: torch.save(torch.load(path), path)")
    raise CheckpointError(f"{path}: unknown format (starts with {head[:8]!r}); minclip reads torch.save and "
                          "TorchScript .pt files, Hugging Face .safetensors and .npz")


def read_state_dict(path):
    """An OpenAI-style state_dict {name: np.ndarray} from any weight file read_file reads; for a minclip
    checkpoint, its model weights. Arrays keep the file's dtype (fp16 stays fp16; build_model upcasts);
    the `module.` prefix of DDP / open_clip is stripped."""
    return state_dict_of(*read_file(path), path)


def state_dict_of(arrays, kind, path):
    """The state_dict in what read_file returned (see read_state_dict)."""
    if kind == "npz" and "meta" in arrays:
        arrays = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    if arrays and all(k.startswith("module.") for k in arrays):
        arrays = OrderedDict((k[len("module."):], v) for k, v in arrays.items())
    if not arrays:
        raise CheckpointError(f"{path}: the file holds no weights")
    return arrays


__all__ = ["CheckpointError", "STORAGE_DTYPES", "ScriptObject", "from_hf", "read_file", "read_state_dict",
           "state_dict_of"]
