"""A second captioned dataset of one's own, unlike the digits and Shapes: fabric and paper swatches whose
class is a texture (stripes, checks, dots, ...) at any angle, scale and pair of colours, with ordinary
captions that put the class word in the middle.

    make_patterns(root, n_train=1000, n_test=200)  ->  root/train.csv (open_clip's tab-separated format,
                                                       columns filepath and title), root/train/*.png,
                                                       root/test/<class name>/*.png

Used by tests/test_own_data.py and tests/benchmarks/bench_small_data.py (--data patterns).
"""
import os

import numpy as np
from PIL import Image

CLASSES = ["striped", "checked", "grid", "polka-dot", "zigzag", "wavy", "plain"]
CAPTIONS = [
    "a swatch of {} fabric",
    "{} wrapping paper on the table",
    "close-up of a shirt with a {} pattern",
    "a {} tablecloth, photographed from above",
    "the {} wallpaper in my hallway",
    "a cushion covered in {} cloth",
    "sample of {} cotton from the market",
]


def pattern_mask(name, size, rng):
    """(size, size) float mask in [0, 1] of texture `name` at a random angle, period and phase."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    angle = rng.uniform(0, np.pi)
    u = x * np.cos(angle) + y * np.sin(angle) + rng.uniform(0, 50)   # across the stripes
    v = -x * np.sin(angle) + y * np.cos(angle) + rng.uniform(0, 50)  # along them
    p = rng.uniform(7, 14)  # period in pixels of the 2x canvas
    if name == "striped":
        return (u / p) % 1 < 0.5
    if name == "checked":
        return (np.floor(u / p) + np.floor(v / p)) % 2 == 1
    if name == "grid":
        return np.minimum((u / p) % 1, (v / p) % 1) < 0.22
    if name == "polka-dot":
        du, dv = (u / p) % 1 - 0.5, (v / p) % 1 - 0.5
        return du ** 2 + dv ** 2 < 0.09
    if name == "zigzag":
        tri = np.abs((v / p) % 1 - 0.5) * 2                          # triangle wave along the stripes
        return ((u + 0.8 * p * tri) / p) % 1 < 0.5
    if name == "wavy":
        return ((u + 0.35 * p * np.sin(2 * np.pi * v / (1.7 * p))) / p) % 1 < 0.5
    if name == "plain":
        return np.zeros((size, size), bool)
    raise ValueError(f"unknown pattern {name!r}")


def render_pattern(k, rng, size=32):
    """Pattern k in two random colours with paper noise -> PIL RGB (drawn at 2x, then averaged down)."""
    mask = pattern_mask(CLASSES[k], 2 * size, rng).astype(np.float32)[..., None]
    ground, ink = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    while np.abs(ground - ink).sum() < 150:  # two colours far enough apart to see the pattern
        ink = rng.integers(0, 256, 3)
    img = ground * (1 - mask) + ink * mask
    img = img.reshape(size, 2, size, 2, 3).mean((1, 3)) + rng.normal(0, 8, (size, size, 1))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_patterns(root, n_train=1000, n_test=200, size=32, seed=0):
    """Write the dataset under `root`; returns (path of train.csv, path of the test folder)."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "train"), exist_ok=True)
    rows = ["filepath\ttitle"]
    for i in range(n_train):
        k = int(rng.integers(len(CLASSES)))
        render_pattern(k, rng, size).save(os.path.join(root, "train", f"{i:05d}.png"))
        rows.append(f"train/{i:05d}.png\t{CAPTIONS[int(rng.integers(len(CAPTIONS)))].format(CLASSES[k])}")
    with open(os.path.join(root, "train.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    for i in range(n_test):
        k = i % len(CLASSES)
        os.makedirs(os.path.join(root, "test", CLASSES[k]), exist_ok=True)
        render_pattern(k, rng, size).save(os.path.join(root, "test", CLASSES[k], f"{i:05d}.png"))
    return os.path.join(root, "train.csv"), os.path.join(root, "test")
