"""minclip.data.datasets: CSV image-caption pairs, image folders, CIFAR-10 batches, and their errors."""
import os
import pickle

import numpy as np
import pytest
from _helpers import fake_tokenize as _fake_tokenize
from PIL import Image

from minclip.data import CIFAR10, CsvImageText, DataLoader, ImageFolder, UnreadableImage
from minclip.data.transforms import clip_preprocess, to_tensor_normalized


def fake_tokenize(captions):
    return _fake_tokenize(captions, length=8)


def save_image(path, size=(40, 30), value=100):
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


@pytest.fixture
def csv_dir(tmp_path):
    save_image(tmp_path / "good.png")
    os.makedirs(tmp_path / "sub")
    save_image(tmp_path / "sub" / "good2.jpg", value=200)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    rows = ["filepath\ttitle", "good.png\ta grey picture", "corrupt.png\ta broken file", "missing.png\tnot there",
            "sub/good2.jpg\ta lighter picture"]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_csv_reads_pairs_relative_to_the_csv(csv_dir, monkeypatch):
    monkeypatch.chdir("/")  # relative paths must not depend on the working directory
    ds = CsvImageText(str(csv_dir / "train.csv"), image_size=32)
    assert len(ds) == 4
    x, caption = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == np.float32 and caption == "a grey picture"
    with Image.open(csv_dir / "good.png") as im:
        np.testing.assert_array_equal(x, clip_preprocess(32)(im))
    assert ds[3][1] == "a lighter picture"


def test_csv_skip_mode_drops_and_counts_in_the_loader(csv_dir):
    ds = CsvImageText(str(csv_dir / "train.csv"), image_size=32)
    with pytest.raises(UnreadableImage, match="corrupt.png"):
        ds[1]
    with pytest.raises(UnreadableImage, match="missing.png"):
        ds[2]
    loader = DataLoader(ds, batch_size=4, tokenize_fn=fake_tokenize)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable.*corrupt\.png"):
        batches = list(loader)
    assert loader.skipped == 2 and len(batches) == 1
    images, tokens = batches[0]
    assert images.shape == (2, 3, 32, 32) and tokens.shape == (2, 8)
    np.testing.assert_array_equal(tokens, fake_tokenize(["a grey picture", "a lighter picture"]))
    loader = DataLoader(ds, batch_size=1, tokenize_fn=fake_tokenize, num_workers=2)  # all-bad batches vanish
    with pytest.warns(UserWarning, match="skipped 2"):
        assert len(list(loader)) == 2
    assert loader.skipped == 2


def test_csv_raise_mode_names_the_file(csv_dir):
    ds = CsvImageText(str(csv_dir / "train.csv"), image_size=32, on_error="raise")
    for i, name in ((1, "corrupt.png"), (2, "missing.png")):
        with pytest.raises(ValueError, match=name) as info:
            ds[i]
        assert not isinstance(info.value, UnreadableImage)
    with pytest.raises(ValueError, match="corrupt.png"):
        list(DataLoader(ds, batch_size=4, tokenize_fn=fake_tokenize))


def test_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        CsvImageText(str(tmp_path / "nope.csv"))
    (tmp_path / "a.csv").write_text("image\tcaption\nx.png\thello\n")
    with pytest.raises(ValueError, match=r"'filepath'.*\['image', 'caption'\]"):
        CsvImageText(str(tmp_path / "a.csv"))
    with pytest.raises(ValueError, match="'title'"):
        CsvImageText(str(tmp_path / "a.csv"), img_key="image")
    assert CsvImageText(str(tmp_path / "a.csv"), img_key="image", caption_key="caption").captions == ["hello"]
    with pytest.raises(ValueError, match="on_error"):
        CsvImageText(str(tmp_path / "a.csv"), img_key="image", caption_key="caption", on_error="ignore")


def test_csv_absolute_paths_and_comma_separator(tmp_path):
    save_image(tmp_path / "pic.png")
    (tmp_path / "b.csv").write_text(f'filepath,title\n{tmp_path / "pic.png"},"a caption, with a comma"\n')
    ds = CsvImageText(str(tmp_path / "b.csv"), sep=",", image_size=16)
    assert ds[0][1] == "a caption, with a comma" and ds[0][0].shape == (3, 16, 16)


def test_image_folder(tmp_path):
    for cls, files in {"dog": ["b.png", "c.jpg"], "cat": ["a.png"]}.items():
        os.makedirs(tmp_path / cls)
        for k, f in enumerate(files):
            save_image(tmp_path / cls / f, value=50 * k)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = ImageFolder(str(tmp_path), image_size=16)
    assert ds.classes == ["cat", "dog"] and len(ds) == 3
    assert [(os.path.basename(p), y) for p, y in ds.samples] == [("a.png", 0), ("b.png", 1), ("c.jpg", 1)]
    x, y = ds[1]
    assert x.shape == (3, 16, 16) and y == 1
    images, labels = next(iter(DataLoader(ds, batch_size=3)))
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 1] and images.shape == (3, 3, 16, 16)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolder(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolder(str(tmp_path))
    os.makedirs(tmp_path / "empty_class")
    with pytest.raises(ValueError, match="no image files"):
        ImageFolder(str(tmp_path))


def write_cifar(folder, n=6, seed=0, train=False):
    """Batches in the official format: pickled dicts keyed by bytes, data uint8 (N, 3072) in CHW order."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = ["test_batch"] if not train else [f"data_batch_{k}" for k in range(1, 6)]
    images, labels = [], []
    for name in names:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        lab = rng.integers(0, 10, n).tolist()
        batch = {b"batch_label": name.encode(), b"labels": lab, b"data": data, b"filenames": [b"x.png"] * n}
        # protocol 2 and the pre-NumPy-2 module name, like the official (Python 2) files
        raw = pickle.dumps(batch, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        with open(os.path.join(folder, name), "wb") as f:
            f.write(raw)
        images.append(data)
        labels += lab
    meta = {b"label_names": [c.encode() for c in ("airplane automobile bird cat deer dog frog horse ship truck"
                                                  .split())], b"num_vis": 3072}
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump(meta, f)
    return np.concatenate(images), labels


def test_cifar10_round_trip(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    data, labels = write_cifar(str(folder))
    ds = CIFAR10(str(tmp_path))  # the parent folder works too
    assert len(ds) == 6 and ds.classes[0] == "airplane" and ds.classes[-1] == "truck"
    for i in range(6):
        hwc = data[i].reshape(3, 32, 32).transpose(1, 2, 0)  # red plane, green plane, blue plane
        np.testing.assert_array_equal(ds.data[i], hwc)
        x, y = ds[i]
        assert y == labels[i] and isinstance(y, int)
        np.testing.assert_array_equal(x, to_tensor_normalized(hwc))  # 32 px: preprocess is only the normalisation
    assert CIFAR10(str(folder), image_size=64)[0][0].shape == (3, 64, 64)
    train_data, train_labels = write_cifar(str(folder), n=2, train=True)
    train = CIFAR10(str(folder), train=True)
    assert len(train) == 10 and train.targets.tolist() == train_labels


def test_cifar10_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="test_batch"):
        CIFAR10(str(tmp_path))
    write_cifar(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        CIFAR10(str(tmp_path), train=True)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should not run",))
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        CIFAR10(str(tmp_path))
