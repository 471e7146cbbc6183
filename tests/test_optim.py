"""Optimizers, parameter groups, state_dict, cosine schedule and gradient clipping.

Arrays are made with NumPy and moved with `backend.asarray`, values read back with
`to_numpy`, so the file also runs under MINCLIP_BACKEND=cupy.
"""
import math

import numpy as np
import pytest
from torch_reference import require

from minclip import backend, nn, to_numpy
from minclip.nn import Parameter
from minclip.optim import SGD, Adam, AdamW, CosineSchedule, clip_grad_norm_, cosine_lr, param_groups_for_clip


def param(values):
    return Parameter(backend.asarray(np.array(values, dtype=np.float64)))


def set_grad(p, values):
    p.grad = backend.asarray(np.array(values, dtype=np.float64))


def run(opt, p, grads):
    """One optimizer step per gradient; returns the parameter after each step."""
    out = []
    for g in grads:
        set_grad(p, g)
        opt.step()
        out.append(to_numpy(p.data).copy())
    return out


G = [[0.5, -1.0], [-1.0, 2.0], [2.0, 0.25]]  # fixed gradients for three steps


# ----------------------------------------------------------------------------- SGD
def test_sgd_plain():
    p = param([1.0, -2.0])
    out = run(SGD([p], lr=0.1), p, G)
    expect = np.array([1.0, -2.0])
    for g, got in zip(G, out):
        expect = expect - 0.1 * np.array(g)  # p = p - lr * g
        np.testing.assert_allclose(got, expect, rtol=0, atol=1e-15)


def test_sgd_momentum_constant_grad():
    # b1 = g, b2 = 0.9 g + g = 1.9 g, b3 = 0.9 * 1.9 g + g = 2.71 g; p -= lr * b
    p = param([1.0, -2.0])
    g = np.array([0.5, -1.0])
    out = run(SGD([p], lr=0.1, momentum=0.9), p, [g] * 3)
    p0 = np.array([1.0, -2.0])
    np.testing.assert_allclose(out[0], p0 - 0.1 * g, atol=1e-15)
    np.testing.assert_allclose(out[1], p0 - 0.1 * (1 + 1.9) * g, atol=1e-15)
    np.testing.assert_allclose(out[2], p0 - 0.1 * (1 + 1.9 + 2.71) * g, atol=1e-15)


def test_sgd_nesterov_constant_grad():
    # buffers as above; the step uses g + 0.9 b: 1.9 g, 2.71 g, 3.439 g
    p = param([1.0, -2.0])
    g = np.array([0.5, -1.0])
    out = run(SGD([p], lr=0.1, momentum=0.9, nesterov=True), p, [g] * 3)
    p0 = np.array([1.0, -2.0])
    np.testing.assert_allclose(out[0], p0 - 0.1 * 1.9 * g, atol=1e-15)
    np.testing.assert_allclose(out[1], p0 - 0.1 * (1.9 + 2.71) * g, atol=1e-15)
    np.testing.assert_allclose(out[2], p0 - 0.1 * (1.9 + 2.71 + 3.439) * g, atol=1e-15)


def test_sgd_weight_decay_is_coupled_l2():
    # SGD(wd) equals SGD on the gradient grad + wd * p, momentum included
    p, q = param([1.0, -2.0]), param([1.0, -2.0])
    a, b = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.3), SGD([q], lr=0.1, momentum=0.9)
    for g in G:
        set_grad(p, g)
        q.grad = backend.asarray(np.array(g)) + 0.3 * q.data
        a.step()
        b.step()
    np.testing.assert_allclose(to_numpy(p.data), to_numpy(q.data), atol=1e-15)


def test_sgd_does_not_write_into_grad():
    p = param([1.0, -2.0])
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
    set_grad(p, [0.5, -1.0])
    g = p.grad
    opt.step()
    opt.step()  # the momentum buffer must be a copy of the first grad, not the grad itself
    np.testing.assert_array_equal(to_numpy(g), [0.5, -1.0])


# ----------------------------------------------------------------------------- Adam / AdamW
def adam_reference(p0, grads, lr, b1, b2, eps, wd, decoupled):
    """The update written out on NumPy arrays, one line per formula."""
    p, m, v, out = np.array(p0, dtype=np.float64), 0.0, 0.0, []
    for t, g in enumerate(grads, start=1):
        g = np.array(g, dtype=np.float64)
        if decoupled:
            p = p - lr * wd * p                       # AdamW: decay the weights
        else:
            g = g + wd * p    # Adam: L2 term added to the gradient
        m = b1 * m + (1 - b1) * g                     # first moment
        v = b2 * v + (1 - b2) * g * g                 # second moment
        m_hat = m / (1 - b1 ** t)                     # bias corrections
        v_hat = v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(p)
    return out


def test_adam_first_step_is_lr_times_sign():
    # with m_hat = g and v_hat = g^2 after one step, the update is lr * g / (|g| + eps)
    p = param([1.0, -2.0])
    out = run(Adam([p], lr=0.01), p, [[0.5, -1.0]])
    np.testing.assert_allclose(out[0], [1.0 - 0.01 * 0.5 / (0.5 + 1e-8), -2.0 + 0.01 * 1.0 / (1.0 + 1e-8)],
                               rtol=0, atol=1e-15)


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_hand_values(wd):
    p = param([1.0, -2.0])
    out = run(Adam([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd), p, G)
    expect = adam_reference([1.0, -2.0], G, 0.01, 0.9, 0.999, 1e-8, wd, decoupled=False)
    for got, want in zip(out, expect):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def test_adamw_hand_values_and_defaults():
    p = param([1.0, -2.0])
    opt = AdamW([p])  # CLIP's settings
    assert opt.param_groups[0]["lr"] == 5e-4 and opt.param_groups[0]["betas"] == (0.9, 0.98)
    assert opt.param_groups[0]["eps"] == 1e-6 and opt.param_groups[0]["weight_decay"] == 0.2
    out = run(opt, p, G)
    expect = adam_reference([1.0, -2.0], G, 5e-4, 0.9, 0.98, 1e-6, 0.2, decoupled=True)
    for got, want in zip(out, expect):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    # step 1 written out: decay 1 - lr*wd, then lr * g / (|g| + eps)
    np.testing.assert_allclose(out[0][0], 1.0 * (1 - 5e-4 * 0.2) - 5e-4 * 0.5 / (0.5 + 1e-6), rtol=1e-13)


def test_coupled_vs_decoupled_weight_decay():
    # zero gradient, p = 1: Adam's L2 term goes through the normalisation (g = wd*p -> step ~ lr);
    # AdamW shrinks the weight by lr*wd*p and the Adam step is 0 (m = 0)
    lr, wd = 0.01, 0.1
    p, q = param([1.0]), param([1.0])
    run(Adam([p], lr=lr, weight_decay=wd), p, [[0.0]])
    run(AdamW([q], lr=lr, weight_decay=wd), q, [[0.0]])
    np.testing.assert_allclose(to_numpy(p.data), [1.0 - lr * 0.1 / (0.1 + 1e-8)], rtol=1e-13)
    np.testing.assert_allclose(to_numpy(q.data), [1.0 - lr * wd], rtol=1e-13)


def test_params_without_grad_are_skipped():
    p, q = param([1.0, 2.0]), param([3.0])
    opt = AdamW([p, q], lr=0.1)
    set_grad(p, [1.0, 1.0])
    opt.step()
    np.testing.assert_array_equal(to_numpy(q.data), [3.0])  # not even decayed
    assert id(q) not in opt.state
    opt.zero_grad()
    assert p.grad is None and q.grad is None


def test_float32_stays_float32():
    p = Parameter(backend.asarray(np.ones((2, 3), np.float32)))
    opt = AdamW([p], lr=0.1)
    p.grad = backend.asarray(np.full((2, 3), 0.5, np.float32))
    opt.step()
    assert p.dtype == np.float32 and opt.state[id(p)]["exp_avg"].dtype == np.float32


def test_invalid_arguments():
    p = param([1.0])
    with pytest.raises(ValueError, match="Nesterov"):
        SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="more than one"):
        SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError):
        SGD(p, lr=0.1)


# ----------------------------------------------------------------------------- parity with torch.optim
@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)),
])
def test_matches_torch(name, kwargs):
    torch = require()
    rng = np.random.default_rng(0)
    w0, grads = rng.standard_normal((3, 4)), rng.standard_normal((5, 3, 4))
    p = Parameter(backend.asarray(w0))
    tp = torch.nn.Parameter(torch.tensor(w0))
    ours = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}[name]([p], **kwargs)
    theirs = getattr(torch.optim, name)([tp], **kwargs)
    for g in grads:
        p.grad, tp.grad = backend.asarray(g), torch.tensor(g)
        ours.step()
        theirs.step()
        np.testing.assert_allclose(to_numpy(p.data), tp.detach().numpy(), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- CLIP's parameter groups
def randp(*shape):
    return Parameter(backend.randn(*shape, std=0.1))


class Fake(nn.Module):
    """A few parameters named as in CLIP."""
    def __init__(self):
        backend.manual_seed(0)
        self.visual = nn.Module()
        self.visual.conv1 = nn.Conv2d(3, 4, 3, bias=False)  # decay (4-D weight)
        self.visual.bn1 = nn.BatchNorm2d(4)  # no decay
        self.visual.class_embedding = randp(4)  # no decay
        self.visual.proj = randp(4, 2)  # decay
        self.token_embedding = nn.Embedding(10, 4)  # no decay (2-D, but an embedding)
        self.positional_embedding = randp(5, 4)  # no decay (2-D, but an embedding)
        self.ln_1 = nn.LayerNorm(4)  # no decay
        self.mlp = nn.Linear(4, 4)  # weight decays, bias does not
        self.text_projection = randp(4, 2)  # decay
        self.logit_scale = Parameter(backend.asarray(np.array(math.log(1 / 0.07), np.float32)))  # no decay (0-d)
        self.frozen = randp(3, 3)
        self.frozen.requires_grad = False  # in no group


def test_param_groups_for_clip_names():
    decay, no_decay = param_groups_for_clip(Fake(), 0.2)
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    assert sorted(decay["param_names"]) == ["mlp.weight", "text_projection", "visual.conv1.weight", "visual.proj"]
    assert sorted(no_decay["param_names"]) == [
        "ln_1.bias", "ln_1.weight", "logit_scale", "mlp.bias", "positional_embedding", "token_embedding.weight",
        "visual.bn1.bias", "visual.bn1.weight", "visual.class_embedding"]
    named = dict(Fake().named_parameters())
    for group in (decay, no_decay):
        assert [p.shape for p in group["params"]] == [named[n].shape for n in group["param_names"]]


def test_no_decay_group_is_not_decayed():
    model = Fake()
    before = {n: to_numpy(p.data).copy() for n, p in model.named_parameters()}
    groups = param_groups_for_clip(model, 0.5)
    opt = AdamW(groups, lr=0.1)
    for p in opt.parameters():
        p.grad = backend.xp.zeros_like(p.data)  # Adam step is 0: only the decay moves weights
    opt.step()
    for n, p in model.named_parameters():
        factor = 1 - 0.1 * 0.5 if n in groups[0]["param_names"] else 1.0
        np.testing.assert_allclose(to_numpy(p.data), before[n] * factor, rtol=1e-6, err_msg=n)


# ----------------------------------------------------------------------------- state_dict
def make(kind, params):
    if kind == "sgd":
        return SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    if kind == "adam":
        return Adam(params, lr=0.01, weight_decay=0.1)
    return AdamW([{"params": params[:1], "weight_decay": 0.1}, {"params": params[1:], "weight_decay": 0.0}],
                 lr=0.01)


def fake_grads(params, step):
    for i, p in enumerate(params):
        p.grad = p.data * 0.5 + (step + 1) * (i + 1) * 0.1  # depends on the weights, like a real loss


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_state_dict_round_trip(kind):
    w = [np.arange(6.0).reshape(2, 3) / 7, np.array([0.3, -0.2]), np.array([1.5])]
    a = [Parameter(backend.asarray(x.copy())) for x in w]
    opt_a = make(kind, a)
    opt_a.param_groups[0]["lr"] = 0.05  # hyper-parameters travel too
    for step in range(3):
        fake_grads(a, step)
        opt_a.step()
    sd = opt_a.state_dict()
    assert all(isinstance(v, np.ndarray) for s in sd["state"] for k, v in s.items() if k != "step")
    b = [Parameter(backend.asarray(to_numpy(p.data).copy())) for p in a]
    opt_b = make(kind, b)
    opt_b.load_state_dict(sd)
    assert opt_b.param_groups[0]["lr"] == 0.05
    for step in range(3, 5):
        fake_grads(a, step)
        fake_grads(b, step)
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(to_numpy(pa.data), to_numpy(pb.data))
    # the saved arrays are copies: the later steps did not write into them
    saved = sd["state"][0]["momentum_buffer" if kind == "sgd" else "exp_avg"]
    assert not np.array_equal(saved, to_numpy(opt_a.state[id(a[0])]["momentum_buffer" if kind == "sgd" else "exp_avg"]))


def test_state_dict_through_checkpoint(tmp_path):
    from minclip import checkpoint as ckpt
    model = Fake()
    opt = AdamW(param_groups_for_clip(model, 0.2), lr=0.01)
    for p in opt.parameters():
        p.grad = backend.xp.ones_like(p.data)
    opt.step()
    path = ckpt.save_checkpoint(str(tmp_path / "c.npz"), model.state_dict(), optimizer=opt.state_dict())
    _, state = ckpt.read_checkpoint(path)
    opt2 = AdamW(param_groups_for_clip(Fake(), 0.2), lr=0.01)
    opt2.load_state_dict(state["optimizer"])
    assert opt2.param_groups[0]["betas"] == (0.9, 0.98)
    for p, q in zip(opt.parameters(), opt2.parameters()):
        for k, v in opt.state[id(p)].items():
            np.testing.assert_array_equal(to_numpy(v), to_numpy(opt2.state[id(q)][k]))


def test_load_state_dict_mismatch():
    p, q = param([[1.0, 2.0]]), param([3.0])
    opt = AdamW([{"params": [p]}, {"params": [q]}])
    set_grad(p, [[1.0, 1.0]])
    set_grad(q, [1.0])
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="2 parameter groups"):
        AdamW([p, q]).load_state_dict(sd)
    with pytest.raises(ValueError, match="group 1 has 1 parameters"):
        AdamW([{"params": [p]}, {"params": [q, param([0.0])]}]).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"'exp_avg' of parameter 0 has shape \(1, 2\)"):
        AdamW([{"params": [param([1.0, 2.0])]}, {"params": [q]}]).load_state_dict(sd)
    named = AdamW([{"params": [p], "param_names": ["a"]}, {"params": [q], "param_names": ["b"]}])
    other = AdamW([{"params": [p], "param_names": ["a"]}, {"params": [q], "param_names": ["c"]}])
    with pytest.raises(ValueError, match="'b' in the state_dict but 'c'"):
        other.load_state_dict(named.state_dict())


# ----------------------------------------------------------------------------- schedule
def test_cosine_lr_values():
    base, warm, total = 1.0, 10, 110
    assert cosine_lr(0, base, warm, total) == pytest.approx(0.1)  # warm-up starts at base/warmup
    assert cosine_lr(4, base, warm, total) == pytest.approx(0.5)
    assert cosine_lr(9, base, warm, total) == pytest.approx(1.0)  # warm-up ends at base
    assert cosine_lr(10, base, warm, total) == pytest.approx(1.0)
    assert cosine_lr(60, base, warm, total) == pytest.approx(0.5)  # half way: cos(pi/2) = 0
    assert cosine_lr(35, base, warm, total) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine_lr(110, base, warm, total) == pytest.approx(0.0, abs=1e-15)
    assert cosine_lr(500, base, warm, total) == pytest.approx(0.0, abs=1e-15)  # stays 0 past the end
    assert cosine_lr(0, base, 0, 100) == pytest.approx(1.0)  # no warm-up


def test_cosine_schedule_sets_every_group():
    p, q = param([1.0]), param([2.0])
    opt = AdamW([{"params": [p]}, {"params": [q], "weight_decay": 0.0}], lr=123.0)
    schedule = CosineSchedule(opt, 5e-4, warmup_steps=10, total_steps=110)
    lr = schedule.step(60)
    assert lr == pytest.approx(2.5e-4)
    assert [g["lr"] for g in opt.param_groups] == [lr, lr]
    with pytest.raises(ValueError):
        CosineSchedule(opt, 5e-4, warmup_steps=-1, total_steps=10)


# ----------------------------------------------------------------------------- gradient clipping
def test_clip_grad_norm_scales_above_max():
    p, q, r = param([0.0, 0.0]), param([0.0]), param([0.0])
    set_grad(p, [3.0, 4.0])
    set_grad(q, [12.0])  # global norm sqrt(9 + 16 + 144) = 13; r has no grad
    total = clip_grad_norm_([p, q, r], max_norm=1.3)
    assert backend.get_array_module(total) is backend.get_array_module(p.grad)  # on the device, like torch's
    assert float(total) == pytest.approx(13.0)
    scale = 1.3 / (13.0 + 1e-6)
    np.testing.assert_allclose(to_numpy(p.grad), [3.0 * scale, 4.0 * scale], rtol=1e-12)
    np.testing.assert_allclose(to_numpy(q.grad), [12.0 * scale], rtol=1e-12)
    assert r.grad is None
    assert float(clip_grad_norm_([p, q], 1.3)) == pytest.approx(1.3, rel=1e-6)


def test_clip_grad_norm_below_max_and_edge_cases():
    p = param([0.0, 0.0])
    set_grad(p, [3.0, 4.0])
    assert float(clip_grad_norm_(iter([p]), 10.0)) == pytest.approx(5.0)  # generators work
    np.testing.assert_array_equal(to_numpy(p.grad), [3.0, 4.0])  # scaled by exactly 1 (on the device, no branch)
    assert float(clip_grad_norm_([param([1.0])], 1.0)) == 0.0  # nothing to clip
    set_grad(p, [np.nan, 1.0])
    assert math.isnan(float(clip_grad_norm_([p], 1.0)))
    np.testing.assert_array_equal(to_numpy(p.grad)[1], 1.0)  # not scaled
    # two parameters sharing one gradient array (the autograd does this for a + b) are each scaled once
    a, b = param([0.0]), param([0.0])
    a.grad = b.grad = backend.asarray(np.array([2.0]))
    assert float(clip_grad_norm_([a, b], 1.0)) == pytest.approx(math.sqrt(8))
    np.testing.assert_allclose(to_numpy(a.grad), to_numpy(b.grad))
    np.testing.assert_allclose(to_numpy(a.grad), [2.0 / (math.sqrt(8) + 1e-6)], rtol=1e-12)
