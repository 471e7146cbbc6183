"""Parity of each functional op with torch.nn.functional in float64: the same data and the same upstream
gradient go through both, and outputs and input gradients must agree. Without torch the tests skip and
name the command that installs it (tests/torch_reference.py). Dropout has no case: the two libraries draw
different masks."""
import numpy as np
import pytest
from _helpers import close, data, host
from torch_reference import require

import minclip.functional as F
from minclip import Tensor, backend

torch = require()
TF = torch.nn.functional


def parity(mc_fn, torch_fn, arrays, rtol=1e-6, atol=1e-9):
    """Run `mc_fn` on minclip tensors and `torch_fn` on torch tensors of the same NumPy `arrays` (floats
    require grad, integers are labels or ids), backprop one random gradient through both, compare."""
    floats = [a.dtype.kind == "f" for a in arrays]
    mts = [Tensor(backend.asarray(a), requires_grad=f) for a, f in zip(arrays, floats)]
    tts = [torch.tensor(a, requires_grad=f) for a, f in zip(arrays, floats)]
    y, yt = mc_fn(*mts), torch_fn(*tts)
    assert y.shape == tuple(yt.shape)
    close(y, yt.detach().numpy(), rtol=rtol, atol=atol)
    g = np.random.default_rng(99).standard_normal(tuple(yt.shape))
    y.backward(backend.asarray(g))
    yt.backward(torch.tensor(g))
    for i, (m, t, f) in enumerate(zip(mts, tts, floats)):
        if f:
            assert m.grad is not None, f"input #{i} got no gradient"
            close(m.grad, t.grad.numpy(), rtol=rtol, atol=atol)
        else:
            assert m.grad is None
    return mts, tts


def labels(high, shape, seed=0):
    return np.random.default_rng(seed).integers(0, high, shape)


MASK = np.random.default_rng(7).standard_normal((4, 4))  # an additive float mask
CASES = [  # (id, starting with the op's name; minclip; torch; input shapes, or integer arrays as they are)
    # linear
    ("linear_bias_3d", F.linear, TF.linear, [(2, 3, 4), (5, 4), (5,)]),
    ("linear_no_bias", F.linear, TF.linear, [(3, 4), (5, 4)]),
    # conv2d
    ("conv2d_s1_p1_bias", lambda x, w, b: F.conv2d(x, w, b, 1, 1), lambda x, w, b: TF.conv2d(x, w, b, 1, 1),
     [(2, 3, 5, 5), (4, 3, 3, 3), (4,)]),
    ("conv2d_s2_p1", lambda x, w: F.conv2d(x, w, stride=2, padding=1), lambda x, w: TF.conv2d(x, w, None, 2, 1),
     [(2, 2, 7, 6), (3, 2, 3, 3)]),
    ("conv2d_non_square", lambda x, w: F.conv2d(x, w, stride=2), lambda x, w: TF.conv2d(x, w, None, 2),
     [(1, 2, 6, 7), (3, 2, 2, 3)]),
    ("conv2d_patchify", lambda x, w, b: F.conv2d(x, w, b, stride=4), lambda x, w, b: TF.conv2d(x, w, b, 4),
     [(2, 3, 8, 8), (5, 3, 4, 4), (5,)]),
    ("conv2d_1x1", F.conv2d, TF.conv2d, [(2, 4, 3, 3), (6, 4, 1, 1), (6,)]),
    # pooling
    ("avg_pool2d_2", lambda x: F.avg_pool2d(x, 2), lambda x: TF.avg_pool2d(x, 2), [(2, 3, 6, 6)]),
    ("avg_pool2d_3_2_1", lambda x: F.avg_pool2d(x, 3, 2, 1), lambda x: TF.avg_pool2d(x, 3, 2, 1), [(1, 2, 7, 7)]),
    ("adaptive_avg_pool2d_1", lambda x: F.adaptive_avg_pool2d(x, 1), lambda x: TF.adaptive_avg_pool2d(x, 1),
     [(2, 3, 4, 4)]),
    ("adaptive_avg_pool2d_2", lambda x: F.adaptive_avg_pool2d(x, 2), lambda x: TF.adaptive_avg_pool2d(x, 2),
     [(2, 3, 4, 4)]),
    # normalisation
    ("layer_norm", F.layer_norm, lambda x, w, b: TF.layer_norm(x, (6,), w, b, 1e-5), [(2, 3, 6), (6,), (6,)]),
    ("batch_norm_train_4d", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
     lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True), [(4, 3, 2, 2), (3,), (3,)]),
    ("batch_norm_train_2d", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
     lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True), [(5, 3), (3,), (3,)]),
    ("l2_normalize", F.l2_normalize, lambda x: TF.normalize(x, dim=-1), [(4, 5)]),
    ("l2_normalize_axis0", lambda x: F.l2_normalize(x, axis=0), lambda x: TF.normalize(x, dim=0), [(4, 5)]),
    # softmax family and losses
    ("softmax_last", F.softmax, lambda x: TF.softmax(x, -1), [(3, 4, 5)]),
    ("softmax_axis1", lambda x: F.softmax(x, 1), lambda x: TF.softmax(x, 1), [(3, 4, 5)]),
    ("log_softmax_last", F.log_softmax, lambda x: TF.log_softmax(x, -1), [(3, 4, 5)]),
    ("log_softmax_axis0", lambda x: F.log_softmax(x, 0), lambda x: TF.log_softmax(x, 0), [(3, 4, 5)]),
    ("cross_entropy", F.cross_entropy, TF.cross_entropy, [(6, 5), labels(5, (6,))]),
    # activations
    ("gelu", F.gelu, TF.gelu, [(3, 7)]),
    ("gelu_tanh", lambda x: F.gelu(x, "tanh"), lambda x: TF.gelu(x, approximate="tanh"), [(3, 7)]),
    ("quick_gelu", F.quick_gelu, lambda x: x * torch.sigmoid(1.702 * x), [(3, 7)]),
    ("sigmoid", F.sigmoid, torch.sigmoid, [(3, 7)]),
    ("relu", F.relu, TF.relu, [(3, 7)]),
    # embedding and attention
    ("embedding", lambda ids, w: F.embedding(ids, w), TF.embedding, [np.array([[1, 4, 1], [0, 1, 5]]), (6, 3)]),
    ("scaled_dot_product_attention", F.scaled_dot_product_attention, TF.scaled_dot_product_attention,
     [(2, 2, 4, 8), (2, 2, 5, 8), (2, 2, 5, 3)]),
    ("scaled_dot_product_attention_causal",
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, F.causal_mask(4, np.float64)),
     lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True), [(2, 2, 4, 8)] * 3),
    ("scaled_dot_product_attention_additive_mask",
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, backend.asarray(MASK)),
     lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(MASK)), [(3, 4, 6)] * 3),
    # the plain versions beside the fast ops
    ("linear_simple", F.linear_simple, TF.linear, [(2, 3, 4), (5, 4), (5,)]),
    ("quick_gelu_simple", F.quick_gelu_simple, lambda x: x * torch.sigmoid(1.702 * x), [(3, 7)]),
    ("softmax_simple", F.softmax_simple, lambda x: TF.softmax(x, -1), [(3, 4, 5)]),
    ("log_softmax_simple", F.log_softmax_simple, lambda x: TF.log_softmax(x, -1), [(3, 4, 5)]),
    ("cross_entropy_simple", F.cross_entropy_simple, TF.cross_entropy, [(6, 5), labels(5, (6,))]),
    ("layer_norm_simple", F.layer_norm_simple, lambda x, w, b: TF.layer_norm(x, (6,), w, b, 1e-5),
     [(2, 3, 6), (6,), (6,)]),
    ("batch_norm_simple", F.batch_norm_simple, lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True),
     [(4, 3, 2, 2), (3,), (3,)]),
    ("conv2d_simple", lambda x, w, b: F.conv2d_simple(x, w, b, 2, 1), lambda x, w, b: TF.conv2d(x, w, b, 2, 1),
     [(2, 2, 7, 6), (3, 2, 3, 3), (3,)]),
    ("scaled_dot_product_attention_simple",
     lambda q, k, v: F.scaled_dot_product_attention_simple(q, k, v, F.causal_mask(4, np.float64)),
     lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True), [(2, 2, 4, 8)] * 3),
]


@pytest.mark.parametrize("name, mc_fn, torch_fn, specs", CASES, ids=[c[0] for c in CASES])
def test_op_matches_torch(name, mc_fn, torch_fn, specs):
    arrays = [s if isinstance(s, np.ndarray) else data(s, seed=i) for i, s in enumerate(specs)]
    parity(mc_fn, torch_fn, arrays)


def test_every_op_but_dropout_has_a_parity_case():
    covered = {op for op in F.__all__ for name, *_ in CASES if name.startswith(op)}
    assert covered == set(F.__all__) - {"dropout"}


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2, 2)])
def test_batch_norm_running_statistics_match_torch(shape):
    x, w, b = data(shape), data((3,), seed=1), data((3,), seed=2)
    rm0, rv0 = data((3,), seed=3), data((3,), seed=4, positive=True)
    rm, rv = backend.asarray(rm0.copy()), backend.asarray(rv0.copy())
    rmt, rvt = torch.tensor(rm0), torch.tensor(rv0)
    for momentum in (0.1, 0.5):  # two steps: the second starts from the first's running statistics
        parity(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=True, momentum=momentum),
               lambda x, w, b: TF.batch_norm(x, rmt, rvt, w, b, training=True, momentum=momentum), [x, w, b])
        close(rm, rmt.numpy())
        close(rv, rvt.numpy())
    # evaluation uses (and keeps) the running statistics
    parity(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=False),
           lambda x, w, b: TF.batch_norm(x, rmt, rvt, w, b, training=False), [x, w, b])
    close(rv, rvt.numpy())


def test_l2_normalize_of_a_zero_row_matches_torch():
    x = data((3, 4))
    x[1] = 0
    parity(F.l2_normalize, lambda x: TF.normalize(x, dim=-1), [x], atol=1e-6)


def test_cross_entropy_with_huge_logits_matches_torch():
    x = data((4, 3)) * 1e4
    parity(F.cross_entropy, TF.cross_entropy, [x, labels(3, (4,), seed=1)])


def test_softmax_with_huge_logits_matches_torch():
    x = data((2, 5)) * 1e4
    mts, _ = parity(F.softmax, lambda x: TF.softmax(x, -1), [x])
    assert np.isfinite(host(mts[0].grad)).all()


def test_linear_then_gelu_then_layer_norm_chain_matches_torch():
    """A small chain: gradients through several ops at once (what a transformer block's MLP does)."""
    def mc(x, w1, w2, g, b):
        return F.layer_norm(F.linear(F.gelu(F.linear(x, w1)), w2), g, b)

    def th(x, w1, w2, g, b):
        return TF.layer_norm(TF.linear(TF.gelu(TF.linear(x, w1)), w2), (4,), g, b)

    parity(mc, th, [data((2, 3, 4)), data((8, 4), seed=1), data((4, 8), seed=2), data((4,), seed=3),
                    data((4,), seed=4)])
