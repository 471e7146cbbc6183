"""An image-embedding index for text-to-image search (the paper's image-text retrieval, Table 13).

    index = build_index(model, "photos/")             # encodes every image once, caches the result
    text = model.encode_text(minclip.tokenize(["a dog playing in the snow"]))
    for path, score in search(index, text, k=5): print(score, path)

On disk, `<folder>/.minclip-index/` (or any `index_path`) holds
  embeddings.npy  float32 (N, embed_dim), unit rows, row i for files[i]
  files.json      {"model": fingerprint of the weights, "files": [{"path", "size", "mtime"}, ...]}
A re-run encodes only files that are new or whose size or mtime changed and drops removed ones;
a different model (another fingerprint) re-encodes everything.
"""
import hashlib
import json
import os
from collections import namedtuple

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from . import backend
from .autograd import no_grad
from .data import IMG_EXTENSIONS, clip_preprocess
from .evaluate import normalize_rows

Index = namedtuple("Index", "root files embeddings fingerprint encoded")
Index.__doc__ = """root: the image folder; files: relative paths; embeddings: float32 (N, D) unit rows;
fingerprint: of the model weights; encoded: the files (re-)encoded by the build that returned it."""


def model_fingerprint(model):
    """A short hash of every parameter and buffer (names, shapes, dtypes, bytes) of `model`."""
    h = hashlib.blake2b(digest_size=16)
    for key, value in model.state_dict().items():
        h.update(f"{key}:{value.shape}:{value.dtype};".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def list_images(folder):
    """Relative paths of the image files under `folder` (IMG_EXTENSIONS), sorted; hidden folders skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # also skips .minclip-index
        found += [os.path.relpath(os.path.join(root, f), folder) for f in files if f.lower().endswith(IMG_EXTENSIONS)]
    return sorted(found)


def encode_images(model, paths, batch_size=64, progress=True):
    """Unit-norm float32 (len(paths), embed_dim) image features, in batches under no_grad.
    A missing file raises FileNotFoundError, an unreadable one ValueError, naming it."""
    preprocess = clip_preprocess(model.visual.input_resolution)
    out = []
    batches = range(0, len(paths), batch_size)
    for start in tqdm(batches, desc="encoding images", unit="batch", disable=not progress or not paths):
        images = []
        for path in paths[start:start + batch_size]:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"image not found: {path}")
            try:
                with Image.open(path) as img:
                    images.append(preprocess(img))
            except OSError as e:  # missing, truncated or not an image
                raise ValueError(f"cannot read image {path}: {e}") from e
        with no_grad():  # no graph: activations are freed batch by batch
            features = backend.to_numpy(model.encode_image(backend.asarray(np.stack(images))).data)
        out.append(normalize_rows(features.astype(np.float32)))
    return np.concatenate(out) if out else np.zeros((0, model.config["embed_dim"]), np.float32)


def _default_path(folder):
    return os.path.join(folder, ".minclip-index")


def load_index(folder=None, index_path=None):
    """The Index saved under `index_path` (default <folder>/.minclip-index); FileNotFoundError if none."""
    return _read_index(folder, index_path or _default_path(folder))[0]


def _read_index(folder, index_path):
    """(Index, the parsed files.json) of the index at index_path."""
    try:
        with open(os.path.join(index_path, "files.json")) as f:
            meta = json.load(f)
        embeddings = np.load(os.path.join(index_path, "embeddings.npy"), allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"no index at {index_path}; build it with minclip.index.build_index(model, folder)")
    if len(meta["files"]) != len(embeddings):
        raise ValueError(f"index at {index_path} is inconsistent: {len(meta['files'])} files but "
                         f"{len(embeddings)} embeddings; delete the folder and build it again")
    return Index(meta.get("root", folder), [e["path"] for e in meta["files"]], embeddings, meta["model"], []), meta


def build_index(model, folder, index_path=None, batch_size=64, progress=True):
    """Encode the images under `folder` (only new or changed ones if an index exists) and save the index.

    Returns an Index whose `encoded` lists the files encoded in this call.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"build_index: {folder} is not a folder")
    index_path = index_path or _default_path(folder)
    fingerprint = model_fingerprint(model)
    stats = {}
    for rel in list_images(folder):
        st = os.stat(os.path.join(folder, rel))
        stats[rel] = {"path": rel, "size": st.st_size, "mtime": st.st_mtime}
    old = {}
    try:
        index, meta = _read_index(folder, index_path)
        if index.fingerprint == fingerprint:
            old = {e["path"]: (e, row) for e, row in zip(meta["files"], index.embeddings)}
    except (FileNotFoundError, ValueError, KeyError):
        pass  # no usable index: encode everything
    stale = [rel for rel, s in stats.items() if rel not in old or old[rel][0] != s]
    fresh = encode_images(model, [os.path.join(folder, rel) for rel in stale], batch_size, progress)
    rows = dict(zip(stale, fresh))
    files = sorted(stats)
    embeddings = np.stack([rows[rel] if rel in rows else old[rel][1] for rel in files]) if files \
        else np.zeros((0, model.config["embed_dim"]), np.float32)
    os.makedirs(index_path, exist_ok=True)
    np.save(os.path.join(index_path, "embeddings.npy"), embeddings.astype(np.float32))
    with open(os.path.join(index_path, "files.json"), "w") as f:
        json.dump({"model": fingerprint, "root": os.path.abspath(folder), "files": [stats[r] for r in files]}, f)
    return Index(os.path.abspath(folder), files, embeddings.astype(np.float32), fingerprint, stale)


def search(index, text_features, k=5):
    """The k best images for each query: text_features (D,) or (1, D) -> [(path, cosine)], (M, D) -> M lists."""
    t = np.asarray(backend.to_numpy(getattr(text_features, "data", text_features)), dtype=np.float32)
    single = t.ndim == 1 or len(t) == 1
    t = t.reshape(-1, t.shape[-1])
    if t.shape[1] != index.embeddings.shape[1]:
        raise ValueError(f"search: text features have {t.shape[1]} dimensions but the index has "
                         f"{index.embeddings.shape[1]}; encode the query with the model that built the index")
    scores = normalize_rows(t) @ index.embeddings.T  # (M, N) cosine similarities
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    results = [[(index.files[j], float(scores[i, j])) for j in row] for i, row in enumerate(order)]
    return results[0] if single else results


__all__ = ["Index", "build_index", "encode_images", "list_images", "load_index", "model_fingerprint", "search"]
