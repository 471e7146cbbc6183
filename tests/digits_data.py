"""A small captioned dataset that looks like a person's own: digits drawn on noisy paper, with ordinary
captions whose words Shapes never uses and whose class word sits at the end of long captions.

    make_digits(root, n_train=1000, n_test=200)  ->  root/train.csv (open_clip's tab-separated format,
                                                     columns filepath and title), root/train/*.png,
                                                     root/test/<class name>/*.png

Used by tests/test_own_data.py and tests/benchmarks/bench_small_data.py.
"""
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CAPTIONS = [
    "a scan of a handwritten {}",
    "number {}, written by hand",
    "an old notebook page where somebody carefully wrote the digit {}",
    "pencil drawing of the numeral {}",
    "a student's homework sheet showing a single {}",
    "{} on paper",
    "close-up photograph of a wrinkled receipt with the figure {}",
]


def render_digit(k, rng, size=32):
    """Digit k drawn in a random font size, position, angle and ink colour on noisy light paper -> PIL RGB."""
    paper = 200 + rng.integers(0, 40, 3)
    noise = rng.integers(-18, 18, (size, size, 1))
    img = Image.fromarray(np.clip(paper + noise, 0, 255).astype(np.uint8))
    glyph = Image.new("L", (size, size), 0)
    font = ImageFont.load_default(size=int(rng.integers(18, 26)))
    ImageDraw.Draw(glyph).text((size / 2 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3)), str(k),
                               font=font, fill=255, anchor="mm")
    glyph = glyph.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR)
    ink = tuple(int(c) for c in rng.integers(0, 90, 3))
    img.paste(ink, (0, 0, size, size), glyph)
    return img


def make_digits(root, n_train=1000, n_test=200, size=32, seed=0):
    """Write the dataset under `root`; returns (path of train.csv, path of the test folder)."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "train"), exist_ok=True)
    rows = ["filepath\ttitle"]
    for i in range(n_train):
        k = int(rng.integers(10))
        render_digit(k, rng, size).save(os.path.join(root, "train", f"{i:05d}.png"))
        rows.append(f"train/{i:05d}.png\t{CAPTIONS[int(rng.integers(len(CAPTIONS)))].format(CLASSES[k])}")
    with open(os.path.join(root, "train.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    for i in range(n_test):
        k = i % 10
        os.makedirs(os.path.join(root, "test", CLASSES[k]), exist_ok=True)
        render_digit(k, rng, size).save(os.path.join(root, "test", CLASSES[k], f"{i:05d}.png"))
    return os.path.join(root, "train.csv"), os.path.join(root, "test")
