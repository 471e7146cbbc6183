"""Image preprocessing: OpenAI CLIP's `preprocess`, re-done with PIL and NumPy only.

OpenAI's `clip/clip.py` builds its preprocessing from torchvision:

    Compose([Resize(n_px, interpolation=BICUBIC), CenterCrop(n_px),
             lambda im: im.convert("RGB"), ToTensor(), Normalize(CLIP_MEAN, CLIP_STD)])

`clip_preprocess(n_px)` performs the same steps, in the same order and with the same arithmetic
(torchvision calls PIL for the resize and computes ToTensor/Normalize in float32), so a
pretrained CLIP sees exactly the numbers it was trained on. Note the order: the resize runs on
the image's ORIGINAL mode, and PIL silently uses NEAREST instead of BICUBIC for palette ("P")
and bilevel ("1") images; the RGB conversion comes after the crop.

Everything else in minclip.data turns images into arrays with `to_tensor_normalized`, and
training-time augmentation (off by default) lives in `train_transform`.
"""
import inspect
import math

import numpy as np
from PIL import Image

# Per-channel mean and std of CLIP's training images (from OpenAI's clip.py), for RGB in [0, 1].
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# float32 like torchvision's Normalize, shaped (3, 1, 1) to broadcast over (3, H, W)
_MEAN32 = np.asarray(CLIP_MEAN, dtype=np.float32).reshape(3, 1, 1)
_STD32 = np.asarray(CLIP_STD, dtype=np.float32).reshape(3, 1, 1)
# A uint8 pixel has only 256 values, so normalisation is a table lookup: (3, 256) float32 computed
# with exactly the arithmetic below, once: the same bits as computing it per pixel.
_LUT = ((np.arange(256, dtype=np.float32)[None, :] / np.float32(255.0) - _MEAN32[:, :, 0]) / _STD32[:, :, 0])


def _check_pil(img, who):
    if not isinstance(img, Image.Image):
        raise TypeError(f"{who}: expected a PIL.Image.Image, got {type(img).__name__}; "
                        "open files with PIL.Image.open(path)")


def resize_shorter(img, n_px, resample=Image.BICUBIC):
    """torchvision `Resize(n_px)` on a PIL image: shorter side -> n_px, aspect ratio kept.

    The longer side becomes int(n_px * long / short) (truncated, as torchvision does). An image
    whose shorter side is already n_px comes back unchanged.
    """
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short == n_px:
        return img
    new_short, new_long = n_px, int(n_px * long / short)
    size = (new_short, new_long) if w <= h else (new_long, new_short)  # PIL sizes are (width, height)
    return img.resize(size, resample)  # PIL itself swaps in NEAREST for modes "P" and "1"


def center_crop(img, n_px):
    """torchvision `CenterCrop(n_px)` on a PIL image -> PIL image of size (n_px, n_px).

    The offset is int(round((h - n_px) / 2)) (Python's round: halves go to even). An image
    smaller than n_px is first zero-padded, (n_px - w) // 2 on the left and the rest on the right.
    """
    w, h = img.size
    if w < n_px or h < n_px:  # cannot happen after resize_shorter; kept for completeness
        pad_l, pad_t = max(n_px - w, 0) // 2, max(n_px - h, 0) // 2
        padded = Image.new(img.mode, (max(w, n_px), max(h, n_px)), 0)
        if img.mode == "P":
            padded.putpalette(img.getpalette())
        padded.paste(img, (pad_l, pad_t))
        img, w, h = padded, padded.width, padded.height
    top, left = int(round((h - n_px) / 2.0)), int(round((w - n_px) / 2.0))
    return img.crop((left, top, left + n_px, top + n_px))


def to_tensor_normalized(img):
    """PIL image or uint8 array (H, W, 3) / (H, W) -> float32 (3, H, W), CLIP-normalised.

    Same arithmetic as torchvision's ToTensor + Normalize: x / 255 then (x - mean) / std, all in
    float32. PIL images of any mode are converted to RGB first (RGBA drops its alpha channel).
    """
    if isinstance(img, Image.Image):
        arr = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    elif isinstance(img, np.ndarray):
        if img.dtype != np.uint8:
            raise TypeError(f"to_tensor_normalized: expected a uint8 array, got dtype {img.dtype}")
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)  # grey -> RGB, like PIL's convert("RGB")
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"to_tensor_normalized: expected an array (H, W, 3) or (H, W), got {img.shape}")
        arr = img
    else:
        raise TypeError(f"to_tensor_normalized: expected a PIL.Image.Image or a uint8 numpy array, "
                        f"got {type(img).__name__}")
    out = np.empty((3,) + arr.shape[:2], dtype=np.float32)  # (3, H, W)
    for c in range(3):  # (x / 255 - mean[c]) / std[c], looked up
        _LUT[c].take(arr[:, :, c], out=out[c])
    return out


def denormalize(x):
    """CLIP-normalised float (3, H, W) or (B, 3, H, W) -> uint8 (H, W, 3) or (B, H, W, 3), for plots."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"denormalize: expected (3, H, W) or (B, 3, H, W), got shape {x.shape}")
    rgb = (x * _STD32 + _MEAN32) * 255.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).swapaxes(-3, -2).swapaxes(-2, -1)  # (..., H, W, 3)


def clip_preprocess(n_px):
    """OpenAI's `preprocess` for resolution n_px: PIL.Image -> float32 (3, n_px, n_px).

    Resize (shorter side, bicubic, on the original mode) -> CenterCrop -> convert("RGB") ->
    /255 -> normalise with CLIP_MEAN / CLIP_STD.
    """
    def preprocess(img):
        _check_pil(img, "clip_preprocess")
        img = center_crop(resize_shorter(img, n_px), n_px)
        return to_tensor_normalized(img.convert("RGB"))
    return preprocess


# ----------------------------------------------------------------------------- augmentation
def random_resized_crop(img, n_px, rng, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop: a random box of `scale` x area and aspect `ratio`,
    resized (bicubic) to (n_px, n_px). PIL in, PIL out; `rng` is a numpy Generator.

    Ten tries to fit a box in the image, then a centre crop with the aspect clamped to `ratio`.
    """
    _check_pil(img, "random_resized_crop")
    w, h = img.size
    area = w * h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        cw, ch = int(round(math.sqrt(target_area * aspect))), int(round(math.sqrt(target_area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            break
    else:  # fallback: the whole image, cropped centrally to the nearest allowed aspect ratio
        in_ratio = w / h
        if in_ratio < ratio[0]:
            cw, ch = w, int(round(w / ratio[0]))
        elif in_ratio > ratio[1]:
            cw, ch = int(round(h * ratio[1])), h
        else:
            cw, ch = w, h
        top, left = (h - ch) // 2, (w - cw) // 2
    return img.resize((n_px, n_px), Image.BICUBIC, box=(left, top, left + cw, top + ch))


def random_hflip(img, rng, p=0.5):
    """Mirror a PIL image left-right with probability p (rng: numpy Generator)."""
    _check_pil(img, "random_hflip")
    return img.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < p else img


def train_transform(n_px, crop_scale=1.0, hflip=False):
    """Training-time transform: a callable (img: PIL.Image, rng: Generator | None) -> float32 (3, n_px, n_px).

    crop_scale 1 and no flip (the default) is exactly clip_preprocess(n_px). crop_scale < 1 takes
    random_resized_crop of crop_scale to all of the image's area, resized to n_px: the paper's one
    augmentation ("a random square crop from resized images", Sec. 2.3), with torchvision's aspect
    jitter. It lets a small dataset be seen a hundred times without being memorised.
    hflip adds random_hflip. Beware: a flip turns "a star on the left" into a star on the right while
    the caption still says "left", and mirrors digits and letters into glyphs that are neither.
    The DataLoader passes an rng derived from (seed, epoch, index), so augmentation is repeatable.
    """
    if not 0 < crop_scale <= 1:
        raise ValueError(f"train_transform: crop_scale is the smallest share of the image a crop keeps, in (0, 1]; "
                         f"got {crop_scale}")
    preprocess = clip_preprocess(n_px)
    augment = crop_scale < 1 or hflip

    def transform(img, rng=None):
        if not augment:
            return preprocess(img)
        rng = np.random.default_rng() if rng is None else rng
        if crop_scale < 1:
            img = random_resized_crop(img, n_px, rng, scale=(crop_scale, 1.0))
        else:  # flips only: the preprocessed image, mirrored or not
            img = center_crop(resize_shorter(img, n_px), n_px)
        if hflip:
            img = random_hflip(img, rng)
        return to_tensor_normalized(img.convert("RGB"))
    transform.takes_rng = augment  # datasets/loader pass an rng only when it is used
    return transform


def wants_rng(transform):
    """True if `transform` is to be called as transform(img, rng), False for transform(img).

    Decided by a `takes_rng` attribute when present (set by train_transform), else by whether
    the callable accepts two positional arguments.
    """
    if transform is None:
        return False
    flag = getattr(transform, "takes_rng", None)
    if flag is not None:
        return bool(flag)
    try:
        params = inspect.signature(transform).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds for p in params) >= 2


def apply_transform(transform, img, rng):
    """transform(img, rng) or transform(img), whichever `transform` expects (see wants_rng)."""
    return transform(img, rng) if wants_rng(transform) else transform(img)


__all__ = ["CLIP_MEAN", "CLIP_STD", "apply_transform", "center_crop", "clip_preprocess", "denormalize",
           "random_hflip", "random_resized_crop", "resize_shorter", "to_tensor_normalized", "train_transform",
           "wants_rng"]
