"""Checkpoints: one `.npz` file with the weights, tokenizer, optimizer state, config and progress.

Layout: model weights under `model/<state_dict key>` (OpenAI's key names), the BPE merges the
model was trained with as the text of a merges file under `tokenizer/merges`, every other array
of nested state (the optimizer's moments) under its path joined by "/", and everything that is
not an array (config, step, epoch, RNG state, hyper-parameters) as one JSON string under `meta`.
A checkpoint alone is enough to use its model: `model, preprocess = minclip.load(path)`, with the run's
tokenizer as `model.tokenizer`. Reading is minclip.readers' (safe with any file); this module writes
checkpoints and reads back what training needs to resume (`read_checkpoint`).

minclip ships one trained model, `tiny-vit-shapes` (minclip/weights/): the default run's weights in
float16, its tokenizer and the run's final zero-shot accuracies; `minclip.load` and `read_checkpoint` take
the name in place of a path, like OpenAI's model names. `minclip export` makes such a file from a run's
checkpoint.

Files are written atomically: to a temporary file in the same folder, flushed to
disk, then renamed over the target, so a crash (or Ctrl-C) mid-write leaves the
previous checkpoint intact.
"""
import json
import os
import tempfile
import warnings

import numpy as np

from .readers import CheckpointError, read_file, state_dict_of
from .tokenizer import SimpleTokenizer, merges_text, read_merges_text, tokenizer_for

FORMAT_VERSION = 1
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


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


def save_checkpoint(path, model_state, tokenizer=None, **state):
    """Write `model_state` (a state_dict), the `tokenizer`'s merges and trained length, and any nested
    `state` (optimizer=..., step=...) atomically."""
    arrays = {f"model/{k}": np.asarray(v) for k, v in model_state.items()}
    if tokenizer is not None:
        arrays["tokenizer/merges"] = np.frombuffer(merges_text(tokenizer.merges).encode("utf-8"), dtype=np.uint8)
        state = dict(state, tokenizer={"trained_length": tokenizer.trained_length})
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


def shipped_models():
    """Names of the trained models that come with minclip, each loadable by name (`minclip.load(name)`)."""
    return sorted(f[:-len(".npz")] for f in os.listdir(WEIGHTS_DIR) if f.endswith(".npz"))


def resolve(path):
    """The file of a shipped model's name (minclip/weights/NAME.npz); any other path unchanged."""
    shipped = os.path.join(WEIGHTS_DIR, f"{path}.npz")
    return shipped if not os.path.exists(path) and os.path.isfile(shipped) else path


def read_checkpoint(path):
    """(weights, state) from a minclip checkpoint or any weight file minclip.readers reads (state {} for a
    file that is only weights); `path` may also be a shipped model's name. A stored tokenizer comes back
    as state["tokenizer"] (a SimpleTokenizer). Raises FileNotFoundError, or CheckpointError naming the file
    and what is wrong in it."""
    path = resolve(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path} (the shipped models, loadable by name: "
                                f"{', '.join(shipped_models())})")
    arrays, kind = read_file(path)
    if kind != "npz" or "meta" not in arrays:
        return state_dict_of(arrays, kind, path), {}
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode())
        version = meta.get("format_version")
    except (ValueError, AttributeError, RecursionError) as e:
        raise CheckpointError(f"{path}: the 'meta' entry is not the JSON of a minclip checkpoint "
                              f"({type(e).__name__})") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r}; this minclip reads version "
                              f"{FORMAT_VERSION}")
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    try:
        state = _unflatten(meta["state"], arrays)
    except (KeyError, TypeError, RecursionError) as e:
        raise CheckpointError(f"{path}: the 'meta' entry does not describe the file's arrays "
                              f"({type(e).__name__})") from None
    if "tokenizer/merges" in arrays:
        try:
            text = arrays["tokenizer/merges"].tobytes().decode("utf-8")
            merges = read_merges_text(text, f"{path}:tokenizer/merges")
        except (UnicodeDecodeError, ValueError) as e:
            raise CheckpointError(f"{path}: the stored tokenizer is unreadable ({e})") from None
        state["tokenizer"] = SimpleTokenizer(merges=merges, **state.get("tokenizer", {}))
    return model_state, state


def export_checkpoint(src, dst, dtype=np.float16):
    """Write the weights of checkpoint `src` as a file to ship or share: floating-point weights in `dtype`,
    the tokenizer, the run's config and step, and its last zero-shot or retrieval evaluation (read from
    the run folder's metrics.jsonl, if there) under state["results"]; no optimizer state. Returns dst."""
    weights, state = read_checkpoint(src)
    weights = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in weights.items()}
    metrics = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(src))), "metrics.jsonl")
    results = {}
    if os.path.isfile(metrics):
        with open(metrics) as f:
            evals = [r for r in map(json.loads, f) if "elapsed_s" in r]
        results = evals[-1] if evals else {}
    keep = {k: state[k] for k in ("config", "step") if k in state}
    return save_checkpoint(dst, weights, tokenizer=state.get("tokenizer"), results=results, **keep)


def checkpoint_tokenizer(state, vocab_size, path):
    """The tokenizer stored in a checkpoint's state, or the one assumed for weights that carry none
    (tokenizer_for(vocab_size)), with a warning naming it unless that is OpenAI's vocabulary."""
    if state.get("tokenizer") is not None:
        return state["tokenizer"]
    tok = tokenizer_for(vocab_size)
    if tok.vocab_size != vocab_size:
        warnings.warn(f"{path} carries no tokenizer (a minclip checkpoint before tokenizers were stored, or "
                      f"weights from elsewhere); assuming the merges in {tok.bpe_path}", stacklevel=2)
    return tok
