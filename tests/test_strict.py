"""The strict stand-in for CuPy (minclip/strict.py) keeps CuPy's rules, and a training step keeps them too:
no implicit conversion, no mixing with NumPy arrays, 0-d results, explicit moves, every device-to-host
transfer counted; a train_step makes none, and the loop reads one per step."""
import numpy as np
import pytest

from minclip import backend, strict
from minclip.autograd import Tensor
from minclip.data import Shapes
from minclip.model import create_model
from minclip.optim import AdamW, param_groups_for_clip
from minclip.tokenizer import tokenizer_for
from minclip.train import read_step_values, train_step


@pytest.fixture
def x():
    return strict.asarray(np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("implicit", [lambda x: np.asarray(x), lambda x: x.__array__(), lambda x: np.exp(x),
                                      lambda x: np.sum(x), lambda x: np.concatenate([x, x]),
                                      lambda x: np.linalg.norm(x)])
def test_implicit_conversion_to_numpy_is_refused(x, implicit):
    with pytest.raises(TypeError):
        implicit(x)


@pytest.mark.parametrize("mixed", [lambda x: x + np.ones(3), lambda x: np.ones(3) + x, lambda x: x @ np.ones(3),
                                   lambda x: strict.maximum(x, np.zeros(3)), lambda x: strict.concatenate(
                                       [x, np.zeros((1, 3))])])
def test_mixing_with_numpy_arrays_is_refused(x, mixed):
    with pytest.raises(TypeError, match="NumPy array cannot be mixed|Unsupported type"):
        mixed(x)


def test_scalars_mix_reductions_and_indexing_give_0d_arrays(x):
    assert isinstance(x * 2.0, strict.ndarray) and isinstance(np.float32(2) * x, strict.ndarray)
    for result in (x.sum(), x.max(axis=None), strict.sum(x), x[0, 1], strict.linalg.norm(x)):
        assert isinstance(result, strict.ndarray) and result.shape == ()


def test_every_device_to_host_transfer_is_explicit_and_counted(x):
    with strict.count_syncs() as n:
        y = x * 2 + 1
        _ = y.sum(axis=0), y.T, y[:, 1:], strict.exp(y), y.reshape(3, 2), len(y)
    assert n[0] == 0
    reads = [lambda: x.get(), lambda: strict.asnumpy(x), lambda: float(x[0, 0]), lambda: int(x[1, 1]),
             lambda: bool(x[0, 1]), lambda: x[0, 0].item(), lambda: x.tolist(), lambda: repr(x),
             lambda: backend.to_numpy(x)]
    for read in reads:
        with strict.count_syncs() as n:
            read()
        assert n[0] == 1
    assert isinstance(x.get(), np.ndarray) and np.array_equal(strict.asnumpy(x), np.arange(6.0).reshape(2, 3))


def test_only_what_cupy_has():
    for name in ("frompyfunc", "nditer", "vectorize", "fromiter", "ndenumerate"):
        assert not hasattr(strict, name), name   # NumPy-only: CuPy has none of these
    assert strict.add.at and strict.linalg.norm and strict.lib.stride_tricks.as_strided and strict.special.erf


def test_the_backend_switch_knows_the_stand_in(x):
    assert backend.get_array_module(x) is strict and backend.is_array(x)
    assert backend.array_module("strict") is strict
    moved = backend.asarray(np.ones(2), like=x)
    assert isinstance(moved, strict.ndarray)
    assert isinstance(backend.asarray(x, like=np.zeros(1)), np.ndarray)  # to the host only when asked


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_a_training_step_makes_no_host_sync_and_the_loop_reads_one(name):
    """Forward, loss, backward, gradient clipping, AdamW with the no-decay groups and the logit-scale
    clamp all stay on the device (0 transfers); read_step_values is the loop's one transfer per step.
    Before this, a step made 9: the loss, the gradient norm, the logit scale, the token ids' min and max,
    and the labels' min and max in both cross-entropies."""
    backend.use("strict")
    backend.manual_seed(0)
    model = create_model(name)
    optimizer = AdamW(param_groups_for_clip(model, 0.1), lr=1e-3)
    shapes = Shapes("train", length=8, image_size=model.visual.input_resolution)
    images = np.stack([shapes[i][0] for i in range(8)])                     # host data, as the loader gives
    tokens = tokenizer_for(model.vocab_size)([shapes.caption(i) for i in range(8)], context_length=16)
    train_step(model, optimizer, images, tokens)                             # warm-up: the first step too
    with strict.count_syncs() as n:
        loss, grad_norm = train_step(model, optimizer, images, tokens)
    assert n[0] == 0, f"{name}: a training step made {n[0]} device-to-host transfers"
    assert isinstance(loss, strict.ndarray) and isinstance(grad_norm, strict.ndarray)
    assert all(isinstance(p.data, strict.ndarray) for p in model.parameters())
    with strict.count_syncs() as n:
        values = read_step_values(loss, model.logit_scale.data, grad_norm)
    assert n[0] == 1 and all(isinstance(v, float) and np.isfinite(v) for v in values)


def test_a_host_image_tensor_is_named_not_mixed():
    """An array is moved to the model's device; a Tensor is not (it carries a graph), so one left on the
    host gets an error that says how to move it instead of a failure deep inside the first convolution."""
    backend.use("strict")
    model = create_model("tiny-vit")
    R = model.visual.input_resolution
    images = np.zeros((2, 3, R, R), np.float32)
    assert model.encode_image(images).shape[0] == 2
    with pytest.raises(ValueError, match=r"image Tensor holds a numpy array.*minclip.strict arrays.*backend.asarray"):
        model.encode_image(Tensor(images))
    assert model.encode_image(Tensor(backend.asarray(images))).shape[0] == 2
