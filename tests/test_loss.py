"""clip_loss (Figure 3 of the paper) and contrastive_accuracy."""
import math

import numpy as np
import pytest

from minclip import backend
from minclip.autograd import Tensor
from minclip.gradcheck import gradcheck
from minclip.loss import MAX_LOGIT_SCALE, clip_loss, contrastive_accuracy, cross_entropy_loss


def features(n=5, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return (Tensor(rng.standard_normal((n, d)), requires_grad=True),
            Tensor(rng.standard_normal((n, d)), requires_grad=True))


def figure3_numpy(I_f, T_f, t):
    """Figure 3 in plain NumPy, axis meaning 'softmax along this axis'."""
    I_e = I_f / np.linalg.norm(I_f, axis=1, keepdims=True)
    T_e = T_f / np.linalg.norm(T_f, axis=1, keepdims=True)
    logits = I_e @ T_e.T * min(np.exp(t), 100.0)
    labels = np.arange(len(logits))

    def ce(z, axis):
        logp = z - np.log(np.exp(z - z.max(axis, keepdims=True)).sum(axis, keepdims=True)) - z.max(axis, keepdims=True)
        return -(logp[labels, labels]).mean()  # the diagonal holds the matching pairs either way
    return (ce(logits, 0) + ce(logits, 1)) / 2, logits


@pytest.fixture(autouse=True)
def float64():
    with backend.default_dtype(np.float64):
        yield


def test_matches_figure3():
    img, txt = features()
    t = Tensor(np.array(math.log(1 / 0.07)), requires_grad=True)
    loss, logits = clip_loss(img, txt, t, return_logits=True)
    ref_loss, ref_logits = figure3_numpy(img.data, txt.data, float(t.data))
    np.testing.assert_allclose(logits.data, ref_logits, rtol=1e-12)
    np.testing.assert_allclose(loss.item(), ref_loss, rtol=1e-12)
    assert loss.shape == () and logits.shape == (5, 5)


def test_matches_torch_style_symmetric_loss():
    """(CE(logits_per_image) + CE(logits_per_text)) / 2, as in open_clip's ClipLoss."""
    img, txt = features(n=4)
    loss, logits = clip_loss(img, txt, 2.0, return_logits=True)
    z = logits.data
    lse_rows = np.log(np.exp(z).sum(1))
    lse_cols = np.log(np.exp(z).sum(0))
    ref = ((lse_rows - np.diag(z)).mean() + (lse_cols - np.diag(z)).mean()) / 2
    np.testing.assert_allclose(loss.item(), ref, rtol=1e-12)


def test_cross_entropy_axis():
    z = Tensor(np.random.default_rng(0).standard_normal((3, 3)))
    labels = np.arange(3)
    np.testing.assert_allclose(cross_entropy_loss(z, labels, axis=0).item(),
                               cross_entropy_loss(z.T, labels, axis=1).item(), rtol=1e-12)


def test_symmetric_in_images_and_texts():
    img, txt = features()
    np.testing.assert_allclose(clip_loss(img, txt, 1.0).item(), clip_loss(txt, img, 1.0).item(), rtol=1e-12)


def test_gradcheck_features_and_temperature():
    img, txt = features(n=4, d=3)
    t = Tensor(np.array(1.3), requires_grad=True)
    gradcheck(clip_loss, [img, txt, t])


def test_scale_invariant_features():
    """Features are l2-normalised first: scaling an embedding changes nothing."""
    img, txt = features()
    a = clip_loss(img, txt, 2.0).item()
    b = clip_loss(Tensor(img.data * np.arange(1, 6)[:, None]), txt, 2.0).item()
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_perfect_and_random_batches():
    eye = Tensor(np.eye(8))
    assert clip_loss(eye, eye, math.log(100)).item() < 1e-3  # aligned pairs, orthogonal negatives
    img, txt = features(n=8, d=3)
    assert abs(clip_loss(img, txt, -20.0).item() - math.log(8)) < 1e-6  # exp(t) ~ 0: uniform softmax


def test_temperature_clamped_at_100():
    img, txt = features()
    t = Tensor(np.array(math.log(500.0)), requires_grad=True)
    loss, logits = clip_loss(img, txt, t, return_logits=True)
    loss.backward()
    assert t.grad == 0  # the clamp is active: exp(t) is the constant 100
    assert img.grad is not None and np.abs(img.grad).sum() > 0
    ref, _ = figure3_numpy(img.data, txt.data, math.log(100.0))
    np.testing.assert_allclose(loss.item(), ref, rtol=1e-12)
    assert np.abs(logits.data).max() <= MAX_LOGIT_SCALE

    t = Tensor(np.array(math.log(99.0)), requires_grad=True)
    clip_loss(img, txt, t).backward()
    assert t.grad != 0  # below the clamp the temperature learns


def test_float32_stays_float32():
    with backend.default_dtype(np.float32):
        img = Tensor(np.ones((3, 4), np.float32) + np.eye(3, 4, dtype=np.float32))
        t = Tensor(np.array(2.0, np.float32), requires_grad=True)
        loss, logits = clip_loss(img, img, t, return_logits=True)
    assert loss.dtype == np.float32 and logits.dtype == np.float32


def test_batch_of_one_rejected():
    img, txt = features(n=1)
    with pytest.raises(ValueError, match="identically zero"):
        clip_loss(img, txt, 1.0)


def test_shape_mismatch_rejected():
    img, _ = features(n=4)
    _, txt = features(n=5)
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(5, 3\)"):
        clip_loss(img, txt, 1.0)
    with pytest.raises(ValueError, match="must both be"):
        clip_loss(Tensor(np.ones(4)), Tensor(np.ones(4)), 1.0)


def test_contrastive_accuracy():
    assert contrastive_accuracy(np.eye(4)) == {"i2t": 1.0, "t2i": 1.0}
    z = np.eye(4)
    z[0] = [0, 5, 0, 0]  # image 0 prefers text 1; text 1 is still closest to image 0 as well
    acc = contrastive_accuracy(Tensor(z))
    assert acc == {"i2t": 0.75, "t2i": 0.75}
    assert all(isinstance(v, float) for v in acc.values())
    z = np.array([[1.0, 0.9], [2.0, 0.5]])  # both images prefer text 0; text 0 prefers image 1, text 1 image 0
    assert contrastive_accuracy(z) == {"i2t": 0.5, "t2i": 0.0}
