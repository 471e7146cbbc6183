"""Datasets read from disk: captioned images from a CSV, labelled image folders, and CIFAR-10.

All of them index like a list: dataset[i] -> (float32 (3, S, S) CLIP-normalised image, target),
where target is a caption str (CsvImageText) or a class index int (ImageFolder, CIFAR10). Each
also has `getitem(i, rng)`, which the DataLoader uses to hand an rng to augmenting transforms.
"""
import csv
import os
import pickle
import warnings

import numpy as np
from PIL import Image

from .transforms import apply_transform, clip_preprocess

# torchvision's list plus .gif (PIL reads its first frame): the one list for datasets, classify, search and index
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")

# The 18 prompt templates of OpenAI's CIFAR-10 zero-shot evaluation (the CLIP repository's data/prompts.md)
CIFAR10_TEMPLATES = [
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.", "a low contrast photo of a {}.",
    "a high contrast photo of a {}.", "a bad photo of a {}.", "a good photo of a {}.", "a photo of a small {}.",
    "a photo of a big {}.", "a photo of the {}.", "a blurry photo of the {}.", "a black and white photo of the {}.",
    "a low contrast photo of the {}.", "a high contrast photo of the {}.", "a bad photo of the {}.",
    "a good photo of the {}.", "a photo of the small {}.", "a photo of the big {}.",
]


class UnreadableImage(ValueError):
    """An image file that is missing or cannot be decoded. The DataLoader drops such items from
    their batch and counts them in `loader.skipped` (raised by datasets built with on_error="skip")."""

    def __init__(self, path, reason=""):
        super().__init__(f"cannot read image {path}" + (f": {reason}" if reason else ""))
        self.path = path


def _load_image(path, on_error, convert=None):
    """Open and fully decode an image file -> PIL.Image (mode converted if `convert`). 16-bit grayscale
    (PNG's "I;16", or "I") is scaled to 8 bits: PIL's own conversion clips it, turning it nearly white."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so a truncated file fails here and not inside the transform
            if im.mode.startswith("I;16") or im.mode == "I":
                a = np.asarray(im).astype(np.int64)
                im = Image.fromarray((a >> 8 if a.max() > 255 else a).clip(0, 255).astype(np.uint8), "L")
            return im.convert(convert) if convert else im.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # PIL's decoders raise all of these
        if on_error == "skip":
            raise UnreadableImage(path, f"{type(e).__name__}: {e}") from e
        raise ValueError(f"cannot read image {path}: {type(e).__name__}: {e}") from e


def _check_on_error(on_error):
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")


# open_clip's defaults for a CSV of image-caption pairs (its --csv-img-key, --csv-caption-key, --csv-separator)
CSV_IMG_KEY, CSV_CAPTION_KEY, CSV_SEPARATOR = "filepath", "title", "\t"


class CsvImageText:
    """Image-caption pairs listed in a CSV file, open_clip's `--train-data` convention.

    path: the CSV (first line: column names). Columns `img_key` (image file path) and
    `caption_key` (the caption); sep="\\t" as open_clip's default. Relative image paths are
    resolved against the CSV file's directory (open_clip resolves them against the working
    directory; ours lets a folder of images and its CSV move together).
    transform: PIL.Image -> array, default clip_preprocess(image_size). The image is passed in its
    original mode, as open_clip and OpenAI's preprocess do.
    on_error: for a missing or corrupt image file, "skip" raises UnreadableImage (the DataLoader
    drops and counts the item), "raise" raises ValueError naming the file.

    dataset[i] -> (float32 (3, image_size, image_size), caption str).
    """

    def __init__(self, path, img_key=CSV_IMG_KEY, caption_key=CSV_CAPTION_KEY, sep=CSV_SEPARATOR, transform=None,
                 image_size=224, on_error="skip"):
        _check_on_error(on_error)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"CsvImageText: CSV file not found: {path}")
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: skip a BOM if present
            rows = list(csv.reader(f, delimiter=sep))
        if not rows:
            raise ValueError(f"CsvImageText: {path} is empty; expected a header line with columns "
                             f"{img_key!r} and {caption_key!r}")
        header = rows[0]
        for key, flag in ((img_key, "--csv-img-key"), (caption_key, "--csv-caption-key")):
            if key not in header:
                raise ValueError(f"CsvImageText: column {key!r} not found in {path}; columns found: {header} "
                                 f"(separator {sep!r}; choose the column with {flag})")
        ii, ci = header.index(img_key), header.index(caption_key)
        root = os.path.dirname(os.path.abspath(path))
        lines = [(n, r) for n, r in enumerate(rows[1:], 2) if any(cell.strip() for cell in r)]  # blank lines ignored
        if not lines:
            raise ValueError(f"CsvImageText: {path} has a header ({len(header)} columns) but no rows")
        for n, r in lines:
            if len(r) <= max(ii, ci):
                raise ValueError(f"CsvImageText: line {n} of {path} has {len(r)} fields, expected {len(header)}")
        empty = [n for n, r in lines if not r[ci].strip()]
        if empty:  # an empty caption is only <|startoftext|><|endoftext|>: nothing to learn from the pair
            warnings.warn(f"CsvImageText: {len(empty)} of the {len(lines)} rows of {path} have an empty caption and "
                          f"are left out (first: line {empty[0]})", stacklevel=2)
            lines = [(n, r) for n, r in lines if r[ci].strip()]
        if not lines:
            raise ValueError(f"CsvImageText: every row of {path} has an empty caption in column {caption_key!r}")
        self.images = [os.path.join(root, r[ii]) for _, r in lines]  # join keeps absolute paths as they are
        self.captions = [r[ci] for _, r in lines]
        self.path, self.on_error = path, on_error
        self.transform = clip_preprocess(image_size) if transform is None else transform

    def __len__(self):
        return len(self.images)

    def drop_missing(self):
        """Leave out the rows whose image file does not exist; returns their paths (reported once by the
        caller, instead of once per epoch by the loader)."""
        keep = [os.path.isfile(p) for p in self.images]
        missing = [p for p, k in zip(self.images, keep) if not k]
        self.images = [p for p, k in zip(self.images, keep) if k]
        self.captions = [c for c, k in zip(self.captions, keep) if k]
        return missing

    def getitem(self, i, rng=None):
        img = _load_image(self.images[i], self.on_error)
        return apply_transform(self.transform, img, rng), self.captions[i]

    def __getitem__(self, i):
        return self.getitem(i)


def _not_a_class(folder):
    """Hidden folders (`.minclip-index`, `.git`, ...) and minclip's own run folders (they hold metrics.jsonl,
    or folders that do) are never classes, whatever images they contain (curves.png, ...)."""
    if os.path.basename(folder).startswith("."):
        return True
    if os.path.isfile(os.path.join(folder, "metrics.jsonl")):
        return True
    return any(os.path.isfile(os.path.join(e.path, "metrics.jsonl")) for e in os.scandir(folder) if e.is_dir())


class ImageFolder:
    """Labelled images stored as root/<class name>/<image file>, like torchvision's ImageFolder.

    classes: sorted list of the sub-folder names (hidden folders and minclip's run folders are not
    classes); class index = position in it.
    samples: list of (path, class index), files found recursively and sorted, extensions in
    IMG_EXTENSIONS. Images are converted to RGB before the transform, as torchvision's loader
    does (this is how CLIP's zero-shot benchmarks were read).

    dataset[i] -> (float32 (3, image_size, image_size), class index int).
    """

    def __init__(self, root, transform=None, image_size=224, on_error="raise"):
        _check_on_error(on_error)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"ImageFolder: folder not found: {root}")
        self.classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not _not_a_class(e.path))
        if not self.classes:
            raise ValueError(f"ImageFolder: no class sub-folders in {root}; expected {root}/<class name>/<image>")
        self.samples = []
        for idx, name in enumerate(self.classes):
            for dirpath, dirs, files in sorted(os.walk(os.path.join(root, name), followlinks=True)):
                dirs[:] = [d for d in dirs if not d.startswith(".")]  # e.g. a search index inside a class
                self.samples += [(os.path.join(dirpath, f), idx) for f in sorted(files)
                                 if f.lower().endswith(IMG_EXTENSIONS)]
        if not self.samples:
            raise ValueError(f"ImageFolder: no image files ({', '.join(IMG_EXTENSIONS)}) under {root}")
        self.targets = [idx for _, idx in self.samples]
        self.on_error = on_error
        self.transform = clip_preprocess(image_size) if transform is None else transform

    def __len__(self):
        return len(self.samples)

    def getitem(self, i, rng=None):
        path, label = self.samples[i]
        return apply_transform(self.transform, _load_image(path, self.on_error, convert="RGB"), rng), label

    def __getitem__(self, i):
        return self.getitem(i)


class InMemory:
    """A dataset whose items are kept in memory once read, up to `max_bytes` of images.

    For training on a small dataset: the first epoch decodes and preprocesses each image, later
    epochs cost only the training step. Only for datasets whose items are the same every time
    (no random augmentation). Items past the cap and unreadable images are simply not kept.
    """

    def __init__(self, dataset, max_bytes=2 * 2 ** 30):
        self.dataset, self.max_bytes = dataset, int(max_bytes)
        self.items, self.nbytes = {}, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.items.get(i)
        if item is None:
            item = self.dataset[i]
            size = np.asarray(item[0]).nbytes
            # loader threads may race on nbytes: at worst a few items over the cap, never a wrong item
            if self.nbytes + size <= self.max_bytes:
                self.items[i] = item
                self.nbytes += size
        return item


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only: a pickle can otherwise run any code."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
                ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR10: refusing to load {module}.{name} from a batch file")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):  # NumPy 2 renamed it (old files say numpy.core)
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def _read_batch(path):
    with open(path, "rb") as f:
        return _SafeUnpickler(f, encoding="bytes").load()  # the official files are Python 2 pickles


class CIFAR10:
    """The CIFAR-10 python batches (https://www.cs.toronto.edu/~kriz/cifar.html).

    path: the extracted folder `cifar-10-batches-py` (or its parent), holding data_batch_1..5,
    test_batch and batches.meta. Each batch is a pickled dict {b"data": uint8 (N, 3072) with the
    1024 red, then green, then blue values of each 32x32 image, b"labels": N ints}; batches.meta
    has b"label_names". train=True reads the 5 data batches (50,000 images), else test_batch (10,000).

    dataset[i] -> (float32 (3, image_size, image_size), class index int); `classes` names them.
    """
    TRAIN_FILES = [f"data_batch_{k}" for k in range(1, 6)]
    TEST_FILES = ["test_batch"]

    def __init__(self, path, train=False, transform=None, image_size=32):
        if os.path.isdir(os.path.join(path, "cifar-10-batches-py")):
            path = os.path.join(path, "cifar-10-batches-py")
        files = (self.TRAIN_FILES if train else self.TEST_FILES) + ["batches.meta"]
        missing = [f for f in files if not os.path.isfile(os.path.join(path, f))]
        if missing:
            raise FileNotFoundError(f"CIFAR10: missing {missing} in {path}; expected the extracted "
                                    "cifar-10-python.tar.gz (folder cifar-10-batches-py)")
        data, labels = [], []
        for f in files[:-1]:
            batch = _read_batch(os.path.join(path, f))
            data.append(np.asarray(batch[b"data"], dtype=np.uint8))
            labels += list(batch[b"labels"])
        data = np.concatenate(data)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
            raise ValueError(f"CIFAR10: unexpected batch contents in {path}: data {data.shape}, {len(labels)} labels")
        self.data = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (N, 32, 32, 3) HWC
        self.targets = np.asarray(labels, dtype=np.int64)
        self.classes = [n.decode("utf-8") for n in _read_batch(os.path.join(path, "batches.meta"))[b"label_names"]]
        self.transform = clip_preprocess(image_size) if transform is None else transform

    def __len__(self):
        return len(self.data)

    def getitem(self, i, rng=None):
        return apply_transform(self.transform, Image.fromarray(self.data[i]), rng), int(self.targets[i])

    def __getitem__(self, i):
        return self.getitem(i)


__all__ = ["CIFAR10", "CIFAR10_TEMPLATES", "CsvImageText", "IMG_EXTENSIONS", "ImageFolder", "InMemory",
           "UnreadableImage"]
