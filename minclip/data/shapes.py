"""Shapes: a procedural captioned-image dataset, small enough to train a CLIP on a laptop CPU.

A coloured shape on a dark background with a caption that describes it ("a small red triangle in the
top left", "red triangle, small", ...): 8 shapes x 8 colours x 2 sizes x 5 positions x 4 backgrounds,
with jitter. Item i of a split is drawn from `np.random.default_rng([seed, split_id, i])` alone: the same
bytes in every process and indexing order, and no disk.

Splits: "train" and "val" draw from 56 (colour, shape) pairs; the other 8, HELDOUT_PAIRS (a diagonal
of the colour x shape Latin square, so each colour and shape is held out once), form "heldout".
Classifying the held-out split among all 64 pair names asks the model to combine two words it learnt
separately into a description it never saw: CLIP's zero-shot transfer (Section 3.1) in miniature.
No class name starts with a vowel, so prompts like "a {}." are always grammatical.

Options for experiments that need harder data (notebooks 13 on); both off by default, and off they
change no byte of any item:
- captions="varied": captions phrased as varied alt-text is: synonyms ("crimson", "disc"), any word
  order, optional details (size, position, background, a frame like "clip art of"). The same content
  can be said in hundreds of ways, which makes predicting the exact words hard (the paper's Figure 2).
- extra=True: two more attributes, TEXTURES (solid, striped, dotted fill) and COUNTS (one to three
  copies of the shape, smaller), drawn and named in the captions.

Shifted test sets (`Shapes(split, shift=name)`, for robustness as in the paper's Section 3.3): the same
items, the same captions and labels, drawn differently in one documented way (SHIFTS). Training never
uses them, and shift=None leaves every image exactly as it was.
"""
import functools
import re
from collections import namedtuple

import numpy as np
from PIL import Image, ImageDraw

from .transforms import apply_transform, to_tensor_normalized

SHAPES = ["circle", "square", "triangle", "star", "cross", "diamond", "hexagon", "heart"]
# Far apart in RGB (closest pair, blue-purple, is ~115 apart) and all bright enough for dark backgrounds.
COLOUR_RGB = {"red": (230, 35, 35), "green": (40, 200, 50), "blue": (50, 100, 255), "yellow": (240, 230, 40),
              "purple": (150, 50, 220), "pink": (255, 120, 190), "white": (245, 245, 245), "cyan": (40, 225, 225)}
COLOURS = list(COLOUR_RGB)
SIZES = ["small", "large"]
POSITIONS = ["top left", "top right", "bottom left", "bottom right", "center"]
BACKGROUNDS = ["black", "dark gray", "dark noise", "dark gradient"]
HELDOUT_PAIRS = [(COLOURS[c], SHAPES[(3 * c + 1) % len(SHAPES)]) for c in range(len(COLOURS))]

TEXTURES = ["solid", "striped", "dotted"]
COUNTS = ["one", "two", "three"]

# Distribution shifts for test sets: each changes how an item is drawn, never what it is.
SHIFTS = {
    "outline": "the shape's outline only, 2 px wide (at 64 px), its inside left as background",
    "noise": "Gaussian pixel noise of standard deviation 40 (of 255) on every channel",
    "background": "a mid-gray background (110 to 150 in every channel) instead of a dark one",
    "rotation": "rotated by 20 to 35 degrees either way instead of at most 10 (never 45: a square stays a square)",
    "scale": "a radius of 6 % to 9 % of the side: smaller than any training shape (11 % to 22 %)",
}
_OUTLINE_WIDTH, _NOISE_STD = 2 / 64, 40
_SHIFT_ANGLE = (np.deg2rad(20), np.deg2rad(35))
_SHIFT_RADIUS = (0.06, 0.09)

# Zero-shot prompt templates per attribute (Section 3.1.4: average the text embeddings over templates).
# Only words the captions use: a word never seen in training has an untrained embedding, and no
# prompt engineering can help it. A colour is never seen without a shape, so colour prompts
# ensemble over the shapes ("a red circle", "a red square", ...) and shape prompts over colours.
TEMPLATES = {
    "shape": ["a {}", "an image of a {}"] + [f"a {c} {{}}" for c in COLOURS],
    "colour": [f"a {{}} {s}" for s in SHAPES],
    "pair": ["a {}", "an image of a {}", "there is a {}"],
    "size": [f"a {{}} {s}" for s in SHAPES],
    "position": [f"a {c} {s} in the {{}}" for c, s in zip(COLOURS, SHAPES)],
    "texture": [f"a {{}} {s}" for s in SHAPES],  # extra=True
    "count": [f"{{}} {c} shapes" for c in COLOURS],  # extra=True; "one ... shapes" is a price paid for one template
}

# Training captions. Colour and shape are always named; size and position only sometimes.
CAPTION_TEMPLATES = [
    "a {size} {colour} {shape} in the {pos}",
    "{colour} {shape}, {size}",
    "a photo of a {size} {colour} {shape} {side}",
    "a {colour} {shape}",
    "there is a {colour} {shape} in the {pos}",
    "{size} {colour} {shape}, {pos}",
    "a {colour} {shape} {side}",
    "an image of a {size} {colour} {shape}",
    "{pos}: a {colour} {shape}",
    "the {shape} in the {pos} is {colour}",
    "a {size} {shape} that is {colour}",
]
# captions="varied": each content word has synonyms (the first is the class name the prompts use) and
# each frame puts the words in its own order, naming the details it has room for, which a caption
# then keeps or drops at random.
SYNONYMS = {
    "circle": ["circle", "disc", "round shape"], "square": ["square", "box", "block"],
    "triangle": ["triangle", "three-sided shape"], "star": ["star", "five-pointed star"],
    "cross": ["cross", "plus sign"], "diamond": ["diamond", "rhombus", "lozenge"],
    "hexagon": ["hexagon", "six-sided shape"], "heart": ["heart", "love heart"],
    "red": ["red", "crimson", "scarlet"], "green": ["green", "lime"], "blue": ["blue", "azure"],
    "yellow": ["yellow", "golden"], "purple": ["purple", "violet"], "pink": ["pink", "rosy"],
    "white": ["white", "snowy"], "cyan": ["cyan", "turquoise", "aqua"],
    "small": ["small", "little", "tiny"], "large": ["large", "big", "huge"],
    "top left": ["top left", "upper left", "top left corner"], "top right": ["top right", "upper right",
                                                                           "top right corner"],
    "bottom left": ["bottom left", "lower left", "bottom left corner"],
    "bottom right": ["bottom right", "lower right", "bottom right corner"],
    "center": ["center", "middle", "centre"],
    "black": ["black", "pitch black"], "dark gray": ["dark gray", "charcoal"],
    "dark noise": ["dark noise", "grainy dark"],
    "dark gradient": ["dark gradient", "dark fading"],
    "solid": ["solid", "filled"], "striped": ["striped", "stripy"], "dotted": ["dotted", "spotty"],
    "one": ["one", "a single"], "two": ["two", "a pair of"], "three": ["three", "a trio of"],
}
VARIED_FRAMES = [  # {a}: "a" (or, with extra=True, the count); {pos} and {bg} are optional details
    "{a} {size} {colour} {shape}{pos}{bg}", "{a} {colour} {shape}{pos}", "a photo of {a} {colour} {shape}{bg}",
    "{a} {shape}, {colour}{pos}", "clip art of {a} {size} {colour} {shape}", "{a} {shape} coloured {colour}{pos}{bg}",
    "here is {a} {colour} {shape}{pos}", "{a} {size} {shape} in {colour}{bg}", "{colour}: {a} {shape}{pos}",
    "picture of {a} {shape} ({colour}, {size}){pos}", "an illustration of {a} {colour} {shape}{bg}",
    "my drawing of {a} {shape}, painted {colour}",
]
_POS_PHRASES = [" in the {}", ", {}", " at the {}"]
_BG_PHRASES = [" on a {} background", " against a {} backdrop"]
CAPTION_STYLES = ("plain", "varied")
_SIDE = {"top left": "on the left side", "top right": "on the right side", "bottom left": "on the left side",
         "bottom right": "on the right side", "center": "in the middle"}

# Geometry as fractions of the image side. The largest shape (radius 0.22, reaching 1.15 radii
# when rotated) still fits inside the image from the closest corner centre (0.28 - 0.02).
_CENTRES = {"top left": (0.28, 0.28), "top right": (0.72, 0.28), "bottom left": (0.28, 0.72),
            "bottom right": (0.72, 0.72), "center": (0.5, 0.5)}
_RADIUS = {"small": (0.11, 0.14), "large": (0.19, 0.22)}
# Jitter: centre +-2% of the side, rotation +-10 degrees (a square never looks like a diamond), +-12 per RGB channel.
_CENTRE_JITTER, _MAX_ANGLE, _COLOUR_JITTER = 0.02, np.deg2rad(10), 12
_SUPERSAMPLE = 4  # draw at 4x, then average 4x4 blocks: antialiased edges, deterministic
_SPLITS = {"train": (0, 20000), "val": (1, 1000), "heldout": (2, 1000)}  # split -> (stream id, default length)


def _unit_polygons():
    """Shape name -> float64 (K, 2) outline (x right, y down), bbox-centred, about unit radius."""
    def regular(n, phase, radii=(1.0,)):
        a = phase + 2 * np.pi * np.arange(n * len(radii)) / (n * len(radii))
        r = np.resize(np.asarray(radii), len(a))
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    w = 0.34  # half-width of the cross's arms
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    raw = {
        "square": np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], float),
        "triangle": regular(3, -np.pi / 2),
        "star": regular(5, -np.pi / 2, radii=(1.0, 0.42)),
        "cross": np.array([(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w),
                           (-1, w), (-1, -w), (-w, -w)], float),
        "diamond": np.array([(0, -1), (0.72, 0), (0, 1), (-0.72, 0)], float),
        "hexagon": regular(6, 0.0),
        # the classic heart curve; y flipped because image rows grow downwards
        "heart": np.stack([16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t)
                                                   - np.cos(4 * t))], 1),
    }
    # half-extent of each shape in radii: tuned by eye so the areas look alike
    extent = {"square": 0.88, "triangle": 1.0, "star": 1.1, "cross": 1.0, "diamond": 1.12, "hexagon": 1.0,
              "heart": 1.05}
    out = {}
    for name, p in raw.items():
        p = p - (p.min(0) + p.max(0)) / 2
        out[name] = p * (extent[name] / np.abs(p).max())
    return out


_POLYGONS = _unit_polygons()
# extra=True: copies of the shape around the item's centre, in copy radii; with more than one copy each is
# half as large, so the group still fits inside the image from a corner position
_COPY_OFFSETS = [[(0.0, 0.0)], [(-1.25, 0.0), (1.25, 0.0)], [(0.0, -1.35), (-1.2, 0.8), (1.2, 0.8)]]
_TEXTURE_PERIOD = 1 / 16  # of the side: stripes and dots every 4 px at 64 px


def _copy_scale(p):
    return 1.0 if p.count == 0 else 0.5


@functools.lru_cache(maxsize=8)  # one (n, n) pattern per texture and size, reused by every item
def _texture_pattern(kind, n):
    """float (n, n) in [0, 1] multiplying the shape's mask: horizontal stripes or a grid of dots."""
    period = _TEXTURE_PERIOD * n
    y, x = np.mgrid[0:n, 0:n] / period
    if kind == "striped":
        return (y % 1 < 0.5).astype(np.float32)
    return (np.hypot(x % 1 - 0.5, y % 1 - 0.5) < 0.35).astype(np.float32)  # dotted


def _plural(phrase):
    last = phrase.split()[-1]
    return phrase + ("es" if last.endswith(("s", "x", "sh", "ch")) else "s")


def _varied_caption(p, rng, extra):
    """A caption for captions="varied": a random frame, a random synonym for every word, and each
    optional detail (size, position, background) kept with probability 1/2."""
    def say(word):
        options = SYNONYMS[word]
        return options[int(rng.integers(len(options)))]
    frame = VARIED_FRAMES[int(rng.integers(len(VARIED_FRAMES)))]
    keep_size, keep_pos, keep_bg = rng.random(3) < 0.5
    shape, a = say(SHAPES[p.shape]), "a"
    if extra:
        shape = f"{say(TEXTURES[p.texture])} {shape}"
        a = say(COUNTS[p.count]) if p.count or rng.random() < 0.5 else "a"
        shape = _plural(shape) if p.count else shape
    pos = _POS_PHRASES[int(rng.integers(len(_POS_PHRASES)))].format(say(POSITIONS[p.position])) if keep_pos else ""
    bg = _BG_PHRASES[int(rng.integers(len(_BG_PHRASES)))].format(say(BACKGROUNDS[p.background])) if keep_bg else ""
    text = frame.format(a=a, size=say(SIZES[p.size]) if keep_size else "", colour=say(COLOURS[p.colour]),
                        shape=shape, pos=pos, bg=bg)
    text = re.sub(r"\s+", " ", text).replace(" ,", ",").replace("( ", "(").replace(", )", ")").strip()
    return re.sub(r"\ba (?=[aeiou])", "an ", text)  # "a aqua star" -> "an aqua star"
_Params = namedtuple("_Params", "colour shape size position background template rgb cx cy radius angle bg_u "
                                "texture count")


class Shapes:
    """Procedural (image, caption) pairs; see the module docstring.

    split: "train" | "val" | "heldout"; length: items in the split (default 20000 / 1000 / 1000);
    image_size: side in pixels (64 by default; 32 and 224 work too); seed: a non-negative int;
    transform: None (image -> CLIP-normalised array as is) or a callable applied to the PIL image,
    called transform(img, rng) if it takes an rng (see transforms.wants_rng); shift: None or a key of
    SHIFTS, to draw a shifted test set (same items, captions and labels); captions: "plain" (the
    CAPTION_TEMPLATES) or "varied" (synonyms, word orders and optional details: VARIED_FRAMES,
    SYNONYMS); extra: True adds texture and count (needs captions="varied", which names them).

    dataset[i] -> (float32 (3, image_size, image_size) CLIP-normalised, caption str).
    """

    def __init__(self, split="train", length=None, image_size=64, seed=0, transform=None, shift=None,
                 captions="plain", extra=False):
        if captions not in CAPTION_STYLES:
            raise ValueError(f"Shapes: unknown captions {captions!r}; choose one of {list(CAPTION_STYLES)}")
        if extra and captions != "varied":
            raise ValueError("Shapes: extra=True needs captions='varied': the plain templates have no words "
                             "for texture and count, so the model could never learn them from captions")
        self.captions, self.extra = captions, bool(extra)
        if shift is not None and shift not in SHIFTS:
            raise ValueError(f"Shapes: unknown shift {shift!r}; choose one of {list(SHIFTS)} (or None)")
        self.shift = shift
        if split not in _SPLITS:
            raise ValueError(f"Shapes: unknown split {split!r}; choose one of {list(_SPLITS)}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"Shapes: seed must be a non-negative int, got {seed!r}")
        if int(image_size) != image_size or image_size < 8:
            raise ValueError(f"Shapes: image_size must be an int >= 8, got {image_size!r}")
        self.split, self.seed, self.image_size, self.transform = split, int(seed), int(image_size), transform
        self.split_id, default_length = _SPLITS[split]
        self.length = default_length if length is None else int(length)
        if self.length < 0:
            raise ValueError(f"Shapes: length must be >= 0, got {length}")
        held = {(COLOURS.index(c), SHAPES.index(s)) for c, s in HELDOUT_PAIRS}
        every = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES))]
        self.pairs = sorted(held) if split == "heldout" else [p for p in every if p not in held]  # (colour, shape) ids
        self._table = None  # per-item attribute ids, built on the first labels() call

    def __len__(self):
        return self.length

    def __repr__(self):
        opts = (f", shift={self.shift!r}" if self.shift else "") + \
            (f", captions={self.captions!r}" if self.captions != "plain" else "") + \
            (", extra=True" if self.extra else "")
        return (f"Shapes(split={self.split!r}, length={self.length}, image_size={self.image_size}, "
                f"seed={self.seed}{opts})")

    def _check_index(self, i):
        i = int(i)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"Shapes: index out of range for a split of {self.length} items")
        return i

    def _params(self, i):
        """(_Params of item i, the Generator positioned after them). Cheap: no pixels."""
        rng = np.random.default_rng([self.seed, self.split_id, i])
        u = rng.random(13)  # one draw for every scalar, so the parameters cost ~20 us
        colour, shape = self.pairs[int(u[0] * len(self.pairs))]
        size, position = int(u[1] * len(SIZES)), int(u[2] * len(POSITIONS))
        rgb = tuple(min(255, max(0, v + int(w * (2 * _COLOUR_JITTER + 1)) - _COLOUR_JITTER))  # +-12 per channel
                    for v, w in zip(COLOUR_RGB[COLOURS[colour]], u[9:12].tolist()))
        lo, hi = _RADIUS[SIZES[size]]
        cx, cy = _CENTRES[POSITIONS[position]]
        p = _Params(colour=colour, shape=shape, size=size, position=position,
                    background=int(u[3] * len(BACKGROUNDS)), template=int(u[4] * len(CAPTION_TEMPLATES)), rgb=rgb,
                    cx=cx + (2 * u[6] - 1) * _CENTRE_JITTER, cy=cy + (2 * u[7] - 1) * _CENTRE_JITTER,
                    radius=lo + u[5] * (hi - lo), angle=(2 * u[8] - 1) * _MAX_ANGLE, bg_u=u[12], texture=0, count=0)
        if self.extra:  # from a stream of their own, so that every other draw stays as it was
            v = self._aux_rng(i, 3).random(2)
            p = p._replace(texture=int(v[0] * len(TEXTURES)), count=int(v[1] * len(COUNTS)))
        if self.shift == "rotation":  # the same draw, moved out to 20..35 degrees on its own side
            lo_a, hi_a = _SHIFT_ANGLE
            p = p._replace(angle=np.sign(p.angle or 1.0) * (lo_a + abs(2 * u[8] - 1) * (hi_a - lo_a)))
        elif self.shift == "scale":
            p = p._replace(radius=_SHIFT_RADIUS[0] + u[5] * (_SHIFT_RADIUS[1] - _SHIFT_RADIUS[0]))
        return p, rng

    def _aux_rng(self, i, stream):
        return np.random.default_rng([self.seed, self.split_id, i, stream])

    def info(self, i):
        """Attributes of item i: dict(shape, colour, size, position, background: str, caption: str,
        rgb: (r, g, b) ints, center: (x, y) and radius in pixels, angle in degrees; with extra=True
        also texture and count: str). With a count above one, center is the group's and radius each copy's."""
        i = self._check_index(i)
        p, _ = self._params(i)
        s = self.image_size
        out = dict(shape=SHAPES[p.shape], colour=COLOURS[p.colour], size=SIZES[p.size],
                   position=POSITIONS[p.position], background=BACKGROUNDS[p.background], caption=self._caption(p, i),
                   rgb=p.rgb, center=(p.cx * s, p.cy * s), radius=p.radius * s * _copy_scale(p),
                   angle=float(np.rad2deg(p.angle)))
        if self.extra:
            out.update(texture=TEXTURES[p.texture], count=COUNTS[p.count])
        return out

    def _caption(self, p, i):
        pos = POSITIONS[p.position]
        if self.captions == "plain":
            return CAPTION_TEMPLATES[p.template].format(size=SIZES[p.size], colour=COLOURS[p.colour],
                                                        shape=SHAPES[p.shape], pos=pos, side=_SIDE[pos])
        return _varied_caption(p, self._aux_rng(i, 2), self.extra)

    def caption(self, i):
        """The caption of item i (str), without rendering."""
        i = self._check_index(i)
        return self._caption(self._params(i)[0], i)

    def _background(self, p, rng):
        """Dark RGB PIL image (S, S); every channel stays <= 75 so all colours stand out."""
        s = self.image_size
        if self.shift == "background":
            return Image.new("RGB", (s, s), (110 + int(p.bg_u * 41),) * 3)
        kind = BACKGROUNDS[p.background]
        if kind == "black":
            return Image.new("RGB", (s, s), (int(p.bg_u * 15),) * 3)
        if kind == "dark gray":
            return Image.new("RGB", (s, s), (35 + int(p.bg_u * 25),) * 3)
        if kind == "dark noise":  # coarse blotches (upsampled) plus fine grain
            k = max(2, s // 8)
            blotch = Image.fromarray(rng.integers(0, 40, (k, k, 3), dtype=np.uint8)).resize((s, s), Image.BILINEAR)
            grain = rng.integers(0, 12, (s, s, 3), dtype=np.uint8)
            return Image.fromarray(np.asarray(blotch) + grain + rng.integers(0, 24, 3, dtype=np.uint8))
        # dark gradient between two random dark colours along a random direction
        c0, c1 = rng.integers(0, 70, (2, 3))
        a = p.bg_u * 2 * np.pi
        x = np.arange(s) / max(s - 1, 1)
        t = np.cos(a) * x[None, :] + np.sin(a) * x[:, None]  # (S, S)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
        return Image.fromarray((c0 + t[:, :, None] * (c1 - c0)).astype(np.uint8))

    def render(self, i):
        """Item i as a PIL RGB image of size (image_size, image_size), uint8."""
        return self._render(*self._params(self._check_index(i)))

    def _render(self, p, rng):
        s, k = self.image_size, _SUPERSAMPLE
        img = self._background(p, rng)
        mask = Image.new("L", (s * k, s * k), 0)
        draw = ImageDraw.Draw(mask)
        r, cx, cy = p.radius * s * k, p.cx * s * k, p.cy * s * k
        outline = dict(outline=255, width=max(1, round(_OUTLINE_WIDTH * s * k))) if self.shift == "outline" else {}
        fill = None if outline else 255
        r = r * _copy_scale(p)
        c, sn = np.cos(p.angle), np.sin(p.angle)
        unit = None if SHAPES[p.shape] == "circle" else _POLYGONS[SHAPES[p.shape]] @ np.array([[c, sn], [-sn, c]]) * r
        for ox, oy in _COPY_OFFSETS[p.count]:  # one copy unless extra=True drew a count
            x, y = cx + ox * r, cy + oy * r
            if unit is None:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, **outline)
            else:
                draw.polygon((unit + (x, y)).ravel().tolist(), fill=fill, **outline)  # rotated, scaled, moved
        if TEXTURES[p.texture] != "solid":
            mask = Image.fromarray((np.asarray(mask) * _texture_pattern(TEXTURES[p.texture], s * k)).astype(np.uint8))
        img.paste(p.rgb, (0, 0, s, s), mask.reduce(k))  # box-filter the 4x mask down: antialiased alpha
        if self.shift == "noise":  # drawn last from the item's stream: every other draw stays as it was
            noise = rng.normal(0, _NOISE_STD, (s, s, 3))
            img = Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))
        return img

    def getitem(self, i, rng=None):
        """(float32 (3, S, S) image, caption). rng feeds a transform that takes one (the DataLoader
        passes one derived from its seed, epoch and i); without it one is derived from the item."""
        i = self._check_index(i)
        p, item_rng = self._params(i)
        img = self._render(p, item_rng)
        if self.transform is None:
            x = to_tensor_normalized(img)
        else:
            rng = np.random.default_rng([self.seed, self.split_id, i, 1]) if rng is None else rng
            x = apply_transform(self.transform, img, rng)
        return x, self._caption(p, i)

    def __getitem__(self, i):
        return self.getitem(i)

    def labels(self, key):
        """int64 (len,) class index of every item for key "shape" | "colour" | "pair" | "size" |
        "position" | "background" (and "texture" | "count" with extra=True), indexing
        Shapes.classnames(key). "pair" is colour * 8 + shape.
        Computed from the parameters only (no rendering): ~0.5 s for 20,000 items, then cached."""
        if self._table is None:
            rows = [self._params(i)[0] for i in range(self.length)]
            self._table = {f: np.array([getattr(p, f) for p in rows], dtype=np.int64).reshape(-1)
                           for f in ("shape", "colour", "size", "position", "background")
                           + (("texture", "count") if self.extra else ())}
        if key == "pair":
            return self._table["colour"] * len(SHAPES) + self._table["shape"]
        if key not in self._table:
            raise ValueError(f"Shapes.labels: unknown key {key!r}; choose shape, colour, pair, size, position, "
                             "background" + (", texture or count" if self.extra
                                              else " (texture and count need extra=True)"))
        return self._table[key].copy()

    @staticmethod
    def classnames(key):
        """Class names (list of str) for key: "shape" (8), "colour" (8), "pair" (64, like
        "red circle", colour-major), "size", "position", "background", "texture" or "count"."""
        names = {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "position": POSITIONS, "background": BACKGROUNDS,
                 "texture": TEXTURES, "count": COUNTS, "pair": [f"{c} {s}" for c in COLOURS for s in SHAPES]}
        if key not in names:
            raise ValueError(f"Shapes.classnames: unknown key {key!r}; choose one of {list(names)}")
        return list(names[key])


__all__ = ["BACKGROUNDS", "CAPTION_STYLES", "CAPTION_TEMPLATES", "COLOURS", "COLOUR_RGB", "COUNTS", "HELDOUT_PAIRS",
           "POSITIONS", "SHAPES", "SHIFTS", "SIZES", "SYNONYMS", "Shapes", "TEMPLATES", "TEXTURES", "VARIED_FRAMES"]
