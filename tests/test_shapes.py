"""minclip.data.shapes: determinism, the held-out split, and that the pictures show what the captions say."""
import hashlib
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from minclip.data.shapes import (
    BACKGROUNDS,
    COLOUR_RGB,
    COLOURS,
    COUNTS,
    HELDOUT_PAIRS,
    POSITIONS,
    SHAPES,
    SHIFTS,
    SIZES,
    SYNONYMS,
    TEMPLATES,
    TEXTURES,
    Shapes,
)
from minclip.data.transforms import to_tensor_normalized, train_transform

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def digest(ds, n=20):
    h = hashlib.sha256()
    for i in range(n):
        x, caption = ds[i]
        h.update(x.tobytes())
        h.update(caption.encode())
    return h.hexdigest()


def test_same_seed_same_bytes_any_order():
    a, b = Shapes("train", seed=3), Shapes("train", seed=3)
    assert digest(a) == digest(b)
    fresh = Shapes("train", seed=3)[7]
    for i in (9, 0, 7):  # reading other items first changes nothing
        a[i]
    x, c = a[7]
    np.testing.assert_array_equal(x, fresh[0])
    assert c == fresh[1]


def test_same_bytes_in_another_process():
    code = ("import hashlib; from minclip.data.shapes import Shapes; ds = Shapes('val', seed=1); "
            "print(hashlib.sha256(b''.join(ds.render(i).tobytes() for i in range(10))).hexdigest())")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    ds = Shapes("val", seed=1)
    assert out.strip() == hashlib.sha256(b"".join(ds.render(i).tobytes() for i in range(10))).hexdigest()


def test_different_seed_or_split_differs():
    assert digest(Shapes("train", seed=0)) != digest(Shapes("train", seed=1))
    assert digest(Shapes("train", seed=0)) != digest(Shapes("val", seed=0))


def test_heldout_pairs_form_a_latin_diagonal():
    assert len(HELDOUT_PAIRS) == 8
    assert sorted(c for c, _ in HELDOUT_PAIRS) == sorted(COLOURS)
    assert sorted(s for _, s in HELDOUT_PAIRS) == sorted(SHAPES)


def test_heldout_pairs_never_in_train_and_only_in_heldout():
    held = {COLOURS.index(c) * len(SHAPES) + SHAPES.index(s) for c, s in HELDOUT_PAIRS}
    train = Shapes("train")  # the full default epoch of 20,000, from parameters only
    pairs = train.labels("pair")
    assert len(pairs) == 20000 and pairs.dtype == np.int64
    assert not held & set(pairs.tolist())
    assert len(set(pairs.tolist())) == 56  # every other pair does occur
    assert set(train.labels("colour").tolist()) == set(range(8))
    assert set(train.labels("shape").tolist()) == set(range(8))
    assert not held & set(Shapes("val").labels("pair").tolist())
    assert set(Shapes("heldout").labels("pair").tolist()) == held
    for key in ("size", "position", "background"):
        assert set(train.labels(key).tolist()) == set(range(len(Shapes.classnames(key))))


def test_labels_classnames_and_info_agree():
    ds = Shapes("val", length=40)
    names = Shapes.classnames("pair")
    assert len(names) == 64 and names[0] == "red circle"
    for key in ("shape", "colour", "pair"):
        assert len(ds.labels(key)) == 40
    for i in range(40):
        info = ds.info(i)
        assert names[ds.labels("pair")[i]] == f"{info['colour']} {info['shape']}"
        assert Shapes.classnames("shape")[ds.labels("shape")[i]] == info["shape"]
        assert info["size"] in SIZES and info["position"] in POSITIONS and info["background"] in BACKGROUNDS
    with pytest.raises(ValueError, match="texture and count need extra=True"):
        ds.labels("texture")
    assert set(TEMPLATES) >= {"shape", "colour", "pair"} and all("{}" in t for ts in TEMPLATES.values() for t in ts)


def test_captions_describe_the_image():
    ds = Shapes("train", length=300)
    captions = set()
    for i in range(300):
        info = ds.info(i)
        cap = ds.caption(i)
        words = cap.replace(",", " ").replace(":", " ").split()
        assert info["colour"] in words and info["shape"] in words, cap
        for side in ("left", "right"):
            if side in words:
                assert side in info["position"], (cap, info["position"])
        for size in SIZES:
            if size in words:
                assert size == info["size"], cap
        assert cap == info["caption"] == ds[i][1]
        captions.add(cap.split(info["colour"])[0])
    assert len(captions) >= 5  # several templates in use


@pytest.mark.parametrize("size", [32, 64, 224])
def test_pixels_show_the_shape(size):
    ds = Shapes("train", length=60 if size < 224 else 12, image_size=size)
    far_corner = {"top left": (-1, -1), "top right": (-1, 0), "bottom left": (0, -1), "bottom right": (0, 0)}
    for i in range(len(ds)):
        info, img = ds.info(i), np.asarray(ds.render(i))
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        cx, cy = info["center"]
        centre = img[int(cy), int(cx)].astype(int)
        # the middle of every shape is filled with its colour (+-12 jitter per channel)
        assert np.abs(centre - COLOUR_RGB[info["colour"]]).max() <= 13, (i, info, centre)
        assert np.abs(centre - info["rgb"]).max() <= 1
        if info["position"] in far_corner:  # the corner diagonally opposite the shape is background: dark
            r, c = far_corner[info["position"]]
            assert img[r, c].max() <= 80, (i, info, img[r, c])


def test_large_square_is_filled_at_its_position():
    ds = Shapes("train", length=2000, image_size=64)
    i = next(i for i in range(2000) if ds.info(i)["shape"] == "square" and ds.info(i)["size"] == "large")
    info, img = ds.info(i), np.asarray(ds.render(i)).astype(int)
    nominal = {"top left": (18, 18), "top right": (46, 18), "bottom left": (18, 46), "bottom right": (46, 46),
               "center": (32, 32)}[info["position"]]  # 0.28 / 0.72 / 0.5 of 64 px
    assert np.hypot(*np.subtract(info["center"], nominal)) <= 2  # position jitter is 2% of the side
    half = int(0.19 * 64 * 0.88 * 0.9)  # smallest large radius x square half-side, minus rotation slack
    x, y = nominal
    patch = img[y - half // 2:y + half // 2 + 1, x - half // 2:x + half // 2 + 1].reshape(-1, 3)
    assert np.abs(patch - COLOUR_RGB[info["colour"]]).max() <= 13  # solid colour, within the jitter
    assert img[0 if y > 32 else -1, 0 if x > 32 else -1].max() <= 80 or info["position"] == "center"


def test_every_shape_stays_inside_the_image():
    ds = Shapes("train", length=400, image_size=32)
    for i in range(400):
        img = np.asarray(ds.render(i)).astype(int)
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        assert border.max() <= 80, (i, ds.info(i))


def test_grid_png(tmp_path):
    ds = Shapes("heldout", length=16, image_size=64)
    grid = Image.new("RGB", (4 * 64, 4 * 64))
    for i in range(16):
        grid.paste(ds.render(i), ((i % 4) * 64, (i // 4) * 64))
    path = tmp_path / "shapes_grid.png"
    grid.save(path)
    with Image.open(path) as im:
        assert im.size == (256, 256)


def test_item_format_and_transform():
    ds = Shapes("val", length=5, image_size=32)
    x, caption = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == np.float32 and isinstance(caption, str)
    np.testing.assert_array_equal(x, to_tensor_normalized(ds.render(0)))
    np.testing.assert_array_equal(ds[-1][0], ds[4][0])
    with pytest.raises(IndexError):
        ds[5]
    aug = Shapes("val", length=5, image_size=32, transform=train_transform(32, crop_scale=0.9, hflip=True))
    a = aug.getitem(0, np.random.default_rng(1))[0]
    np.testing.assert_array_equal(a, aug.getitem(0, np.random.default_rng(1))[0])
    np.testing.assert_array_equal(aug[0][0], aug[0][0])  # without an rng: derived from the item, repeatable


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        Shapes("test")
    with pytest.raises(ValueError, match="seed"):
        Shapes(seed=-1)
    with pytest.raises(ValueError, match="classnames"):
        Shapes.classnames("material")
    with pytest.raises(ValueError, match="unknown captions 'fancy'"):
        Shapes(captions="fancy")
    with pytest.raises(ValueError, match="extra=True needs captions='varied'"):
        Shapes(extra=True)
    assert len(Shapes("train")) == 20000 and len(Shapes("val")) == 1000 and len(Shapes("heldout")) == 1000


def test_render_is_fast():
    ds = Shapes("train", image_size=64)
    ds[0]
    t = time.perf_counter()
    for i in range(300):
        ds[i]
    assert (time.perf_counter() - t) / 300 < 1e-3  # item incl. normalisation; ~0.3 ms on a laptop core


# ----------------------------------------------------------------------------- shifted test sets
def test_a_shift_keeps_items_captions_and_labels():
    base = Shapes("val", length=50, seed=2)
    assert digest(Shapes("val", length=50, seed=2, shift=None)) == digest(base)  # no shift: the same bytes
    for shift in SHIFTS:
        shifted = Shapes("val", length=50, seed=2, shift=shift)
        assert [shifted.caption(i) for i in range(50)] == [base.caption(i) for i in range(50)]
        for key in ("pair", "size", "position", "background"):
            np.testing.assert_array_equal(shifted.labels(key), base.labels(key))
        assert digest(shifted) != digest(base), shift
    with pytest.raises(ValueError, match="unknown shift 'blur'; choose one of .*outline"):
        Shapes("val", shift="blur")


def _large_filled(n=400):
    base = Shapes("val", length=n, image_size=64)
    return base, [i for i in range(n) if base.info(i)["size"] == "large" and base.info(i)["shape"] != "heart"]


def test_outline_leaves_the_inside_as_background():
    base, large = _large_filled()
    outline = Shapes("val", length=len(base), image_size=64, shift="outline")
    for i in large[:20]:
        info = base.info(i)
        x, y = (round(v) for v in info["center"])
        rgb = np.array(COLOUR_RGB[info["colour"]])
        filled, drawn = (np.asarray(d.render(i)).astype(int) for d in (base, outline))
        assert np.abs(filled[y, x] - rgb).max() <= 13            # the centre is the shape's colour
        assert np.abs(drawn[y, x] - rgb).max() > 60              # and in the outline, background
        coloured = [(np.abs(img - rgb).max(-1) <= 13).sum() for img in (filled, drawn)]
        assert 0 < coloured[1] < 0.6 * coloured[0], (i, coloured)


def test_noise_background_rotation_and_scale_do_what_they_say():
    n = 200
    base = Shapes("val", length=n, image_size=64)
    noisy, gray, turned, tiny = (Shapes("val", length=n, image_size=64, shift=s)
                                 for s in ("noise", "background", "rotation", "scale"))
    diffs = np.stack([np.asarray(noisy.render(i), float) - np.asarray(base.render(i), float) for i in range(20)])
    assert 30 < diffs.std() < 42                                 # std 40, a little less where clipped at 0 or 255
    for i in range(n):
        corners = np.asarray(gray.render(i)).astype(int)[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert {base.info(i)["position"]} == {gray.info(i)["position"]}
        # a corner shows background unless the shape sits there: mid-gray, 110 to 150
        far = [c for c, pos in zip(corners, ["top left", "top right", "bottom left", "bottom right"])
               if pos != base.info(i)["position"]]
        assert all(110 <= v <= 150 for c in far for v in c), (i, far)
        assert abs(base.info(i)["angle"]) <= 10 + 1e-9 and 20 - 1e-9 <= abs(turned.info(i)["angle"]) <= 35 + 1e-9
        assert 0.11 * 64 - 1e-9 <= base.info(i)["radius"] <= 0.22 * 64 + 1e-9
        assert 0.06 * 64 - 1e-9 <= tiny.info(i)["radius"] <= 0.09 * 64 + 1e-9


# ----------------------------------------------------------------------------- varied captions, more attributes
def _names(word):
    """The synonyms of a class word, as in captions="varied"."""
    return SYNONYMS[word]


def test_varied_captions_change_only_the_words():
    base, varied = Shapes("val", length=60, seed=4), Shapes("val", length=60, seed=4, captions="varied")
    for i in range(20):  # the same pixels

        assert np.array_equal(np.asarray(varied.render(i)), np.asarray(base.render(i)))
    for key in ("pair", "size", "position", "background"):
        np.testing.assert_array_equal(varied.labels(key), base.labels(key))
    caps = [varied.caption(i) for i in range(60)]
    assert caps == [varied[i][1] for i in range(60)] == [varied.info(i)["caption"] for i in range(60)]
    assert caps == [Shapes("val", length=60, seed=4, captions="varied").caption(i) for i in range(60)]  # repeatable
    assert caps != [base.caption(i) for i in range(60)]


def test_varied_captions_name_colour_and_shape_in_many_ways():
    ds = Shapes("train", length=2000, captions="varied")
    caps, synonyms_used = [], set()
    for i in range(2000):
        info, cap = ds.info(i), ds.caption(i)
        caps.append(cap)
        for key in ("colour", "shape"):
            said = [w for w in _names(info[key]) if w in cap]
            assert said, (key, info[key], cap)          # always named, by one of its synonyms
            synonyms_used.add(said[-1])
        for other in SHAPES:                            # and no other shape is named
            if other != info["shape"]:
                assert not any(f" {w}" in f" {cap}" for w in _names(other) if w not in _names(info["shape"])
                               and not any(w in v for v in _names(info["shape"]))), (other, cap)
        if " in the " in cap or " at the " in cap:
            assert any(w in cap for w in _names(info["position"])), cap
        assert "  " not in cap and not cap.startswith(" ") and " ," not in cap
        assert not re.search(r"\ba [aeiou]", cap), cap     # "an aqua star", never "a aqua star"
    assert synonyms_used == {w for word in SHAPES + COLOURS for w in _names(word)}  # every synonym appears
    assert len(set(caps)) > 1500                          # hardly any caption repeats
    canonical = np.mean([ds.info(i)["shape"] in caps[i].split() for i in range(2000)])
    assert 0.3 < canonical < 0.7, canonical               # the class word itself: about half the time


def _count_blobs(mask):
    """Number of 4-connected True regions of a 2-D bool array (a flood fill; no SciPy needed)."""
    seen, blobs = np.zeros_like(mask), 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        blobs, stack = blobs + 1, [start]
        seen[start] = True
        while stack:
            y, x = stack.pop()
            for v, u in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= v < mask.shape[0] and 0 <= u < mask.shape[1] and mask[v, u] and not seen[v, u]:
                    seen[v, u] = True
                    stack.append((v, u))
    return blobs


def test_extra_attributes_are_drawn_and_named():
    ds = Shapes("val", length=300, image_size=64, captions="varied", extra=True)
    assert Shapes.classnames("texture") == TEXTURES and Shapes.classnames("count") == COUNTS
    for key in ("texture", "count"):
        assert set(ds.labels(key).tolist()) == set(range(3))
    for i in range(300):
        info, cap = ds.info(i), ds.caption(i)
        assert any(w in cap for w in _names(info["texture"])), cap
        if info["count"] != "one":
            assert any(f"{w} " in cap for w in _names(info["count"])), cap
    # the count is the number of separate blobs of the shape's colour (large copies, no dots, no hearts
    # whose lobes can merge with a neighbour at 64 px)
    checked = 0
    for i in range(300):
        info = ds.info(i)
        if info["texture"] != "solid" or info["shape"] in ("heart", "star", "cross"):
            continue
        img = np.asarray(ds.render(i)).astype(int)
        blobs = _count_blobs(np.abs(img - np.array(info["rgb"])).max(-1) <= 40)
        assert blobs == COUNTS.index(info["count"]) + 1, (i, info, blobs)
        checked += 1
    assert checked > 30


def test_textures_remove_part_of_the_fill():
    ds = Shapes("val", length=200, image_size=64, captions="varied", extra=True)
    share = {t: [] for t in TEXTURES}
    for i in range(200):
        info = ds.info(i)
        if info["count"] != "one" or info["size"] != "large" or info["shape"] not in ("circle", "square", "hexagon"):
            continue  # one large copy of a shape that fills the middle of its bounding box
        img = np.asarray(ds.render(i)).astype(int)
        x, y = (round(v) for v in info["center"])
        r = int(info["radius"] * 0.5)
        patch = img[y - r:y + r, x - r:x + r]  # the middle of the shape
        share[info["texture"]].append((np.abs(patch - np.array(info["rgb"])).max(-1) <= 13).mean())
    assert min(share["solid"]) > 0.95
    for t in ("striped", "dotted"):
        assert share[t] and max(share[t]) < 0.7, (t, share[t])
