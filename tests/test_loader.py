"""minclip.data.loader: repeatable order, exact resumption, workers that change nothing."""
import numpy as np
import pytest
from _helpers import fake_tokenize

from minclip.data import DataLoader, Shapes, train_transform


class Labelled:
    """(image, class index) items: the shape label of a Shapes split."""
    def __init__(self, shapes):
        self.shapes, self.labels = shapes, shapes.labels("shape")

    def __len__(self):
        return len(self.shapes)

    def __getitem__(self, i):
        return self.shapes[i][0], int(self.labels[i])


@pytest.fixture(scope="module")
def shapes():
    return Shapes("train", length=50, image_size=16)


def collect(loader, *args):
    it = loader.iter_epoch(*args) if args else iter(loader)
    return [(x.copy(), t.copy()) for x, t in it]


def assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ta), (xb, tb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ta, tb)


def test_batches_shapes_and_dtypes(shapes):
    loader = DataLoader(shapes, batch_size=16, tokenize_fn=fake_tokenize)
    batches = collect(loader)
    assert len(loader) == len(batches) == 4
    assert [len(x) for x, _ in batches] == [16, 16, 16, 2]
    x, t = batches[0]
    assert x.shape == (16, 3, 16, 16) and x.dtype == np.float32 and t.shape == (16, 16) and t.dtype == np.int64
    np.testing.assert_array_equal(x[3], shapes[3][0])  # shuffle=False: index order
    np.testing.assert_array_equal(t, fake_tokenize([shapes.caption(i) for i in range(16)]))


def test_drop_last(shapes):
    loader = DataLoader(shapes, batch_size=16, drop_last=True, tokenize_fn=fake_tokenize)
    assert len(loader) == 3 and [len(x) for x, _ in collect(loader)] == [16, 16, 16]


def test_same_seed_same_batches_and_epochs_differ(shapes):
    a = DataLoader(shapes, batch_size=8, shuffle=True, seed=7, tokenize_fn=fake_tokenize)
    b = DataLoader(shapes, batch_size=8, shuffle=True, seed=7, tokenize_fn=fake_tokenize)
    assert_same(collect(a, 1), collect(b, 1))
    assert not np.array_equal(a.order(0), a.order(1))
    assert sorted(a.order(1).tolist()) == list(range(50))
    assert not np.array_equal(a.order(0), DataLoader(shapes, 8, shuffle=True, seed=8).order(0))
    b.set_epoch(1)
    assert_same(collect(a, 1), collect(b))  # set_epoch picks what plain iteration yields
    np.testing.assert_array_equal(collect(b, 1)[0][0][0], shapes[int(a.order(1)[0])][0])


def test_workers_change_nothing(shapes):
    serial = DataLoader(shapes, batch_size=8, shuffle=True, seed=3, tokenize_fn=fake_tokenize)
    threaded = DataLoader(shapes, batch_size=8, shuffle=True, seed=3, tokenize_fn=fake_tokenize, num_workers=2)
    assert_same(collect(serial, 2), collect(threaded, 2))


@pytest.mark.parametrize("workers", [0, 2])
def test_start_batch_resumes_exactly(shapes, workers):
    loader = DataLoader(shapes, batch_size=8, shuffle=True, seed=1, drop_last=True, tokenize_fn=fake_tokenize,
                        num_workers=workers)
    full = collect(loader, 4)
    for k in (0, 2, len(loader)):
        assert_same(collect(loader, 4, k), full[k:])
    with pytest.raises(ValueError, match="start_batch"):
        loader.iter_epoch(0, len(loader) + 1)


def test_label_datasets_yield_int64_labels(shapes):
    ds = Labelled(shapes)
    images, labels = next(iter(DataLoader(ds, batch_size=10, num_workers=2)))
    assert images.shape == (10, 3, 16, 16) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, shapes.labels("shape")[:10])


def test_augmentation_rng_comes_from_seed_epoch_index():
    ds = Shapes("val", length=12, image_size=16, transform=train_transform(16, crop_scale=0.5, hflip=True))
    a = DataLoader(ds, batch_size=4, shuffle=True, seed=5, tokenize_fn=fake_tokenize)
    b = DataLoader(ds, batch_size=4, shuffle=True, seed=5, tokenize_fn=fake_tokenize, num_workers=2)
    batches = collect(a, 3)
    assert_same(batches, collect(b, 3))
    i = int(a.order(3)[0])
    np.testing.assert_array_equal(batches[0][0][0], ds.getitem(i, np.random.default_rng([5, 3, i]))[0])


def test_default_tokenizer(shapes):
    from minclip.tokenizer import tokenize
    expected = tokenize([shapes.caption(i) for i in range(4)], context_length=20, truncate=True)
    _, tokens = next(iter(DataLoader(shapes, batch_size=4, context_length=20)))
    np.testing.assert_array_equal(tokens, expected)


def test_abandoned_epoch_and_worker_errors(shapes):
    loader = DataLoader(shapes, batch_size=4, tokenize_fn=fake_tokenize, num_workers=2)
    for _ in loader:
        break  # leaving early shuts the pool down without hanging

    class Broken:
        def __len__(self):
            return 8

        def __getitem__(self, i):
            if i == 5:
                raise RuntimeError("item 5 is broken")
            return np.zeros((3, 2, 2), np.float32), i

    batches = DataLoader(Broken(), batch_size=4, num_workers=2).iter_epoch(0)
    next(batches)  # the first batch is fine
    with pytest.raises(RuntimeError, match="item 5"):
        next(batches)


def test_bad_arguments(shapes):
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="batch_size"):
            DataLoader(shapes, batch_size=bad)
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(shapes, batch_size=2, num_workers=-1)
    with pytest.raises(TypeError, match="float"):
        next(iter(DataLoader([(np.zeros((3, 2, 2), np.float32), 0.5)], batch_size=1)))
