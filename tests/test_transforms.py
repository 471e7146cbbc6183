"""minclip.data.transforms: OpenAI's preprocess re-done with PIL + NumPy, checked value by value."""
import numpy as np
import pytest
from PIL import Image
from torch_reference import require, torchvision_transforms

from minclip.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    center_crop,
    clip_preprocess,
    denormalize,
    random_hflip,
    random_resized_crop,
    to_tensor_normalized,
    train_transform,
    wants_rng,
)


def synthetic(mode, size, seed=0):
    """A deterministic noisy image with smooth structure, in any PIL mode."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // max(w + h - 2, 1)], -1)
    arr = np.clip(base + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    if mode == "RGBA":
        alpha = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
        return Image.fromarray(np.concatenate([arr, alpha], -1), "RGBA")
    img = Image.fromarray(arr, "RGB")
    if mode == "P":
        return img.quantize(colors=16)
    return img.convert(mode)


def reference(img, n):
    """OpenAI's Resize(n, BICUBIC) -> CenterCrop(n) -> RGB -> ToTensor -> Normalize, step by step,
    in float32 like torchvision. Returns float32 (3, n, n)."""
    w, h = img.size
    if w <= h:
        nw, nh = n, int(n * h / w)
    else:
        nw, nh = int(n * w / h), n
    # torchvision hands BICUBIC to PIL, and PIL falls back to NEAREST for palette/bilevel images
    resample = Image.NEAREST if img.mode in ("P", "1") else Image.BICUBIC
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), resample)
    top, left = int(round((nh - n) / 2.0)), int(round((nw - n) / 2.0))
    img = img.crop((left, top, left + n, top + n)).convert("RGB")
    x = np.asarray(img).astype(np.float32).transpose(2, 0, 1) / np.float32(255)
    mean = np.asarray(CLIP_MEAN, np.float32)[:, None, None]
    std = np.asarray(CLIP_STD, np.float32)[:, None, None]
    return (x - mean) / std


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
@pytest.mark.parametrize("size", [(37, 53), (300, 17), (64, 64), (17, 300), (65, 99)])
@pytest.mark.parametrize("n", [32, 64])
def test_clip_preprocess_matches_reference(mode, size, n):
    img = synthetic(mode, size)
    out = clip_preprocess(n)(img)
    assert out.shape == (3, n, n) and out.dtype == np.float32
    np.testing.assert_array_equal(out, reference(img, n))  # same float32 arithmetic -> same bits


def test_clip_preprocess_float64_formula():
    img = synthetic("RGB", (64, 64))
    expected = (np.asarray(img, np.float64).transpose(2, 0, 1) / 255 - np.asarray(CLIP_MEAN)[:, None, None]) \
        / np.asarray(CLIP_STD)[:, None, None]
    np.testing.assert_allclose(clip_preprocess(64)(img), expected, atol=1e-6)  # 64 px: no resize, no crop


def test_palette_images_use_nearest():
    img = synthetic("P", (37, 53))
    out = denormalize(clip_preprocess(32)(img)).reshape(-1, 3)
    palette = {tuple(c) for c in np.asarray(img.convert("RGB")).reshape(-1, 3)}
    assert {tuple(c) for c in out} <= palette  # nearest never invents colours; bicubic would


def test_torchvision_parity():
    """The preprocessing OpenAI's clip.load returns, built from torchvision's transforms."""
    require("torchvision")
    T = torchvision_transforms()
    tv = T.Compose([T.Resize(48, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(48),
                    lambda im: im.convert("RGB"), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
    for mode in ("RGB", "RGBA", "L", "P"):
        img = synthetic(mode, (37, 53))
        np.testing.assert_allclose(clip_preprocess(48)(img), tv(img).numpy(), atol=1e-6)


def test_center_crop_pads_small_images_like_torchvision():
    img = Image.fromarray(np.full((3, 3, 3), 200, np.uint8))
    out = np.asarray(center_crop(img, 6))
    assert out.shape == (6, 6, 3)
    assert (out[1:4, 1:4] == 200).all() and out.sum() == 200 * 27  # pad (6 - 3) // 2 = 1 on top/left


def test_type_errors_name_the_type():
    with pytest.raises(TypeError, match="ndarray"):
        clip_preprocess(32)(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(TypeError, match="str"):
        to_tensor_normalized("cat.png")
    with pytest.raises(TypeError, match="float"):
        to_tensor_normalized(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(4, 4, 4\)"):
        to_tensor_normalized(np.zeros((4, 4, 4), np.uint8))


def test_to_tensor_normalized_and_denormalize():
    arr = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = to_tensor_normalized(arr)
    assert x.shape == (3, 5, 7) and x.dtype == np.float32
    np.testing.assert_array_equal(x, to_tensor_normalized(Image.fromarray(arr)))
    np.testing.assert_array_equal(denormalize(x), arr)  # exact round trip
    np.testing.assert_array_equal(denormalize(np.stack([x, x])), np.stack([arr, arr]))
    grey = arr[:, :, 0]
    np.testing.assert_array_equal(to_tensor_normalized(grey), to_tensor_normalized(Image.fromarray(grey)))


def test_random_resized_crop_and_flip():
    img = synthetic("RGB", (80, 60))
    a = random_resized_crop(img, 32, np.random.default_rng(3))
    b = random_resized_crop(img, 32, np.random.default_rng(3))
    assert a.size == (32, 32) and np.array_equal(np.asarray(a), np.asarray(b))
    square = synthetic("RGB", (50, 50))
    whole = random_resized_crop(square, 32, np.random.default_rng(0), scale=(1, 1), ratio=(1, 1))
    np.testing.assert_array_equal(np.asarray(whole), np.asarray(square.resize((32, 32), Image.BICUBIC)))
    flipped = random_hflip(img, np.random.default_rng(0), p=1.0)
    np.testing.assert_array_equal(np.asarray(flipped), np.asarray(img)[:, ::-1])
    assert random_hflip(img, np.random.default_rng(0), p=0.0) is img


def test_train_transform():
    img = synthetic("RGB", (70, 50))
    plain = train_transform(32)
    assert not wants_rng(plain)
    np.testing.assert_array_equal(plain(img, None), clip_preprocess(32)(img))
    aug = train_transform(32, crop_scale=0.3)
    assert wants_rng(aug)
    x = aug(img, np.random.default_rng(5))
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    np.testing.assert_array_equal(x, aug(img, np.random.default_rng(5)))
    assert not np.array_equal(x, aug(img, np.random.default_rng(6)))
    # the crop alone: never mirrored, and the same box as random_resized_crop draws
    box = random_resized_crop(img, 32, np.random.default_rng(5), scale=(0.3, 1.0))
    np.testing.assert_array_equal(x, to_tensor_normalized(box))
    flip = train_transform(32, hflip=True)
    assert wants_rng(flip)
    flips = {flip(img, np.random.default_rng(s)).tobytes() for s in range(8)}
    assert flips == {plain(img).tobytes(), plain(img.transpose(Image.FLIP_LEFT_RIGHT)).tobytes()}
    for bad in (0, -0.5, 1.5):
        with pytest.raises(ValueError, match="crop_scale"):
            train_transform(32, crop_scale=bad)


def test_wants_rng():
    assert wants_rng(lambda img, rng: img) and not wants_rng(lambda img: img) and not wants_rng(None)
