"""The elementwise ops on several threads (minclip/parallel.py): the same bits as on one, and still correct.

Each test forces the split with small arrays (MIN_ELEMENTS lowered to 1), so every op below runs over
several row blocks on several threads, then compares with one thread bit for bit, and gradient-checks
the split version in float64. Matrix products are compared bit for bit where the BLAS gives a block of
rows of a product the bits of the whole product; OpenBLAS 0.3.31 (NumPy 2.4.6's) does not, not even
between 1 and 2 of its own threads, and there they must agree to float32 round-off instead.
"""
import functools

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from minclip import backend, parallel
from minclip import functional as F
from minclip.autograd import Tensor
from minclip.gradcheck import gradcheck
from minclip.loss import clip_loss
from minclip.model import CLIP
from minclip.optim import AdamW, clip_grad_norm_


@pytest.fixture
def split_everything(monkeypatch):
    """Any array of 2 or more rows, any product, is split, 3 threads; restores the thread count after the test."""
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 1)
    # products: 2.1M multiply-adds per block, above OpenBLAS's small-matrix path (up to 100^3), whose
    # other kernels round differently; the real MIN_FLOPS keeps blocks twice as large
    monkeypatch.setattr(parallel, "MIN_FLOPS", 1 << 22)
    previous = parallel.set_num_threads(3)
    yield
    parallel.set_num_threads(previous)


def _randn(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _t(a, requires_grad=True):
    return Tensor(backend.asarray(a), requires_grad=requires_grad)


def _forward_backward(fn, arrays, threads):
    """fn's output and every input's gradient (a random upstream gradient), as host arrays."""
    parallel.set_num_threads(threads)
    inputs = [_t(a) for a in arrays]
    y = fn(*inputs)
    y.backward(backend.asarray(_randn(*y.shape, seed=99, dtype=arrays[0].dtype)))
    return [backend.to_numpy(y.data)] + [backend.to_numpy(x.grad) for x in inputs]


CAUSAL = np.triu(np.full((5, 5), -np.inf, np.float32), 1)
OPS = {
    "quick_gelu": (F.quick_gelu, [(6, 4, 8)]),
    "layer_norm": (F.layer_norm, [(6, 5, 8), (8,), (8,)]),
    "attention": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v), [(6, 2, 5, 4)] * 3),
    "causal attention": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, backend.asarray(CAUSAL)),
                         [(6, 2, 5, 4)] * 3),
    "batch_norm train": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), [(6, 3, 4, 4), (3,), (3,)]),
    "add": (lambda a, b: a + b, [(6, 4), (6, 4)]),
    "linear": (F.linear, [(6, 64, 96), (128, 96), (128,)]),               # rows of the products
    "matmul, few rows": (lambda a, b: a @ b, [(16, 1024), (1024, 384)]),  # columns
    "matmul, batched": (lambda a, b: a @ b, [(6, 128, 96), (6, 96, 128)]),  # whole matrices
    "conv2d 3x3": (lambda x, w: F.conv2d(x, w, padding=1), [(16, 8, 16, 16), (16, 8, 3, 3)]),
    "conv2d channels last": (lambda x, w: F.conv2d(x, w, padding=1), [(32, 32, 8, 8), (16, 32, 3, 3)]),
    "conv2d 1x1": (F.conv2d, [(8, 64, 16, 16), (64, 64, 1, 1)]),
    "conv2d stride 2": (lambda x, w: F.conv2d(x, w, stride=2, padding=1), [(32, 8, 32, 32), (16, 8, 3, 3)]),
}


# ops whose products are split; batched ones hand out whole matrices, but on one BLAS thread instead of its own
PRODUCTS = {"linear", "matmul, few rows", "matmul, batched", "conv2d 3x3", "conv2d channels last", "conv2d 1x1",
            "conv2d stride 2"}


@functools.cache
def _blas_splits_exactly():
    """Whether NumPy's BLAS, on one thread, gives a block of rows or columns of a product the bits of the whole
    product on its own threads (what parallel.matmul's split is compared with)."""
    a, b = _randn(512, 256), _randn(256, 256, seed=1)
    whole = a @ b
    with threadpool_limits(1, "blas"):
        return np.array_equal(a[:128] @ b, whole[:128]) and np.array_equal(a @ b[:, :40], whole[:, :40])


def assert_same(one, many, exact):
    """Bit for bit, or (a BLAS whose blocks round differently) to float32 round-off of the largest value."""
    for a, b in zip(one, many):
        assert a.dtype == b.dtype
        if exact:
            assert np.array_equal(a, b, equal_nan=True)
        else:
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * np.abs(a).max())


@pytest.mark.parametrize("op", OPS)
def test_bit_identical_for_1_and_3_threads(op, split_everything, monkeypatch):
    fn, shapes = OPS[op]
    arrays = [_randn(*s, seed=i) for i, s in enumerate(shapes)]
    one = _forward_backward(fn, arrays, 1)
    handed_off = []
    get_pool = parallel._get_pool
    monkeypatch.setattr(parallel, "_get_pool", lambda: handed_off.append(1) or get_pool())
    three = _forward_backward(fn, arrays, 3)
    assert bool(handed_off) == (backend.current() == "numpy")  # split on NumPy; device arrays never are
    assert_same(one, three, exact=op not in PRODUCTS or _blas_splits_exactly())


@pytest.mark.parametrize("op", OPS)
def test_split_ops_pass_gradcheck(op, split_everything):
    fn, shapes = OPS[op]
    if op == "causal attention":  # the mask in float64, as the inputs
        fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, backend.asarray(CAUSAL.astype(np.float64)))  # noqa: E731
    gradcheck(fn, [_t(_randn(*s, seed=i, dtype=np.float64)) for i, s in enumerate(shapes)])


def test_a_training_step_is_bit_identical_for_1_and_2_threads(split_everything):
    """tiny model, forward + loss + backward + clipping + AdamW: the same weights after a step (bit for bit
    where the BLAS splits exactly; else within lr / 50: AdamW divides each gradient by its own RMS, so a
    gradient that rounds near zero can move its weight by a share of lr, see test_distributed.py)."""
    def one_step(threads):
        parallel.set_num_threads(threads)
        backend.manual_seed(0)
        model = CLIP(embed_dim=16, image_resolution=16, vision_layers=1, vision_width=64, vision_patch_size=4,
                     context_length=8, vocab_size=600, transformer_width=32, transformer_heads=2,
                     transformer_layers=1)
        opt = AdamW(model.parameters(), lr=1e-3)
        images = backend.asarray(_randn(4, 3, 16, 16))
        tokens = backend.asarray(np.random.default_rng(1).integers(1, 599, (4, 8)))
        loss = clip_loss(model.encode_image(images), model.encode_text(tokens), model.logit_scale)
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return [backend.to_numpy(p.data) for p in model.parameters()]
    exact = _blas_splits_exactly()
    for a, b in zip(one_step(1), one_step(2)):
        assert np.array_equal(a, b) if exact else np.allclose(a, b, rtol=1e-5, atol=1e-3 / 50)


def test_blocks_cover_every_row_once(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 10)
    previous = parallel.set_num_threads(4)
    try:
        assert parallel.blocks(3, 100) == [(0, 1), (1, 2), (2, 3)]           # fewer rows than threads
        assert parallel.blocks(10, 1) == [(0, 10)]                            # too small to split
        parts = parallel.blocks(1001, 7)
        assert len(parts) == 4 and parts[0][0] == 0 and parts[-1][1] == 1001
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    finally:
        parallel.set_num_threads(previous)


def test_items_are_shared_out_once_each(split_everything):
    seen = []
    sizes = [5, 1, 1, 9, 2, 2, 2, 30, 1, 1]
    parallel.for_items(seen.append, list(range(10)), sizes, np.zeros(1))
    assert sorted(seen) == list(range(10))


def test_a_worker_exception_reaches_the_caller(split_everything):
    def kernel(a, b):
        if a > 0:
            raise RuntimeError(f"block {a}:{b} failed")
    with pytest.raises(RuntimeError, match="block"):
        parallel.for_rows(kernel, 6, np.zeros((6, 4)))


def test_bad_thread_settings_are_refused(monkeypatch):
    monkeypatch.setattr(parallel, "_num_threads", None)
    monkeypatch.setenv("MINCLIP_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="MINCLIP_NUM_THREADS='two'"):
        parallel.num_threads()
    monkeypatch.setenv("MINCLIP_NUM_THREADS", "0")
    with pytest.raises(ValueError, match="at least 1"):
        parallel.num_threads()
    monkeypatch.setenv("MINCLIP_NUM_THREADS", "3")
    assert parallel.num_threads() == 3
    with pytest.raises(ValueError, match="at least 1"):
        parallel.set_num_threads(0)
