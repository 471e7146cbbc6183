"""Checkpoints: one `.npz` file with the weights, optimizer state, config and progress.

Layout: model weights under `model/<state_dict key>` (OpenAI's key names), every
other array of nested state (the optimizer's moments) under its path joined by
"/", and everything that is not an array (config, step, epoch, RNG state,
hyper-parameters) as one JSON string under `meta`.

Files are written atomically: to a temporary file in the same folder, flushed to
disk, then renamed over the target, so a crash (or Ctrl-C) mid-write leaves the
previous checkpoint intact.
"""
import io
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not fit the model."""


def _flatten(tree, prefix, arrays):
    """Move every array of a nested dict/list into `arrays` (path -> array); return the rest."""
    if isinstance(tree, dict):
        return {k: _flatten(v, f"{prefix}/{k}", arrays) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_flatten(v, f"{prefix}/{i}", arrays) for i, v in enumerate(tree)]
    if isinstance(tree, np.ndarray) or hasattr(tree, "get") and hasattr(tree, "shape"):
        arrays[prefix] = np.asarray(tree.get() if hasattr(tree, "get") else tree)
        return {"__array__": prefix}
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def _unflatten(tree, arrays):
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return arrays[tree["__array__"]]
        return {k: _unflatten(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_unflatten(v, arrays) for v in tree]
    return tree


def save_checkpoint(path, model_state, **state):
    """Write `model_state` (a state_dict) and any nested `state` (optimizer=..., step=...) atomically."""
    arrays = {f"model/{k}": np.asarray(v) for k, v in model_state.items()}
    meta = _flatten(state, "state", arrays)
    meta = {"format_version": FORMAT_VERSION, "state": meta}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_checkpoint(path):
    """Read a checkpoint: returns (model_state dict, state dict). Raises CheckpointError with the path."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as f:
            data = f.read()
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e})") from e
    if "meta" not in arrays:
        raise CheckpointError(f"checkpoint {path} has no 'meta' entry: not a minclip checkpoint")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path} has an unreadable 'meta' entry: {e}") from e
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {meta.get('format_version')}, "
                              f"this minclip reads version {FORMAT_VERSION}")
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    return model_state, _unflatten(meta["state"], arrays)


def load_weights(path):
    """Model weights from a minclip checkpoint or from a plain `.npz` of a state_dict (such as
    OpenAI's weights converted with `np.savez(path, **state_dict)`, see the README); .pt/.pth/.bin
    and .safetensors files (PyTorch, TorchScript, Hugging Face) go to minclip.pretrained."""
    if str(path).lower().endswith((".pt", ".pth", ".bin", ".safetensors")):
        from .pretrained import read_state_dict
        return read_state_dict(path)
    try:
        return load_checkpoint(path)[0]
    except CheckpointError as e:
        if "no 'meta' entry" not in str(e):
            raise
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
