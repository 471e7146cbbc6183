"""minclip.index: build an image-embedding index, re-run it after adding, changing and removing
images (only those re-encoded), reload it, and search it in the right order."""
import os

import numpy as np
import pytest
from PIL import Image

from minclip import backend
from minclip.index import Index, build_index, list_images, load_index, search
from minclip.model import create_model


@pytest.fixture(scope="module")
def model():
    backend.manual_seed(0)
    with backend.default_dtype(np.float32):
        return create_model("tiny-vit").eval()


def write_image(path, seed, size=(40, 36)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size[::-1] + (3,), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def folder(tmp_path):
    for i, name in enumerate(["a.png", "b.jpg", "sub/c.png", "sub/d.bmp"]):
        write_image(str(tmp_path / name), seed=i)
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_build_rerun_only_encodes_new_and_changed(model, folder):
    first = build_index(model, str(folder), batch_size=3, progress=False)
    assert first.files == ["a.png", "b.jpg", os.path.join("sub", "c.png"), os.path.join("sub", "d.bmp")]
    assert sorted(first.encoded) == sorted(first.files)
    assert first.embeddings.dtype == np.float32 and first.embeddings.shape == (4, 64)
    np.testing.assert_allclose(np.linalg.norm(first.embeddings, axis=1), 1, rtol=1e-5)
    assert (folder / ".minclip-index" / "embeddings.npy").exists()

    unchanged = build_index(model, str(folder), progress=False)
    assert unchanged.encoded == []
    np.testing.assert_array_equal(unchanged.embeddings, first.embeddings)

    write_image(str(folder / "new.png"), seed=10)
    write_image(str(folder / "b.jpg"), seed=11, size=(50, 50))  # changed: another size on disk
    os.remove(folder / "sub" / "d.bmp")
    second = build_index(model, str(folder), progress=False)
    assert sorted(second.encoded) == ["b.jpg", "new.png"]
    assert second.files == ["a.png", "b.jpg", "new.png", os.path.join("sub", "c.png")]
    for name in ["a.png", os.path.join("sub", "c.png")]:  # carried over from the first build
        np.testing.assert_array_equal(second.embeddings[second.files.index(name)],
                                      first.embeddings[first.files.index(name)])
    rebuilt = build_index(model, str(folder), index_path=str(folder / "fresh"), progress=False)
    np.testing.assert_allclose(rebuilt.embeddings, second.embeddings, rtol=1e-5, atol=1e-6)

    loaded = load_index(str(folder))
    assert loaded.files == second.files and loaded.fingerprint == second.fingerprint
    np.testing.assert_array_equal(loaded.embeddings, second.embeddings)


def test_other_model_reencodes_everything(model, folder):
    build_index(model, str(folder), progress=False)
    backend.manual_seed(1)
    with backend.default_dtype(np.float32):
        other = create_model("tiny-vit").eval()
    assert len(build_index(other, str(folder), progress=False).encoded) == 4


def test_search_order(model, folder):
    files = ["w.png", "x.png", "y.png", "z.png"]
    embeddings = np.eye(4, dtype=np.float32)
    index = Index("/photos", files, embeddings, "fp", [])
    query = np.array([0.1, 0.0, 3.0, -0.5])  # most like y, then w, then x (0), then z (negative)
    hits = search(index, query, k=3)
    assert [h[0] for h in hits] == ["y.png", "w.png", "x.png"]
    np.testing.assert_allclose([h[1] for h in hits], query[[2, 0, 1]] / np.linalg.norm(query), rtol=1e-6)
    both = search(index, backend.asarray(np.stack([embeddings[1], embeddings[3]])), k=1)
    assert [b[0][0] for b in both] == ["x.png", "z.png"]
    with pytest.raises(ValueError, match="dimensions"):
        search(index, np.ones(5), k=1)
    built = build_index(model, str(folder), progress=False)  # each image is its own best match
    for i, name in enumerate(built.files):
        assert search(built, built.embeddings[i], k=1)[0][0] == name


def test_missing_index_and_folder(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="build_index"):
        load_index(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        build_index(model, str(tmp_path / "nope"))
    assert list_images(str(tmp_path)) == []
