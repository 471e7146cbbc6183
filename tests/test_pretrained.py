"""minclip.readers and minclip.load: weight files in each format, written here by hand (torch.save's zip/pickle
layout, a TorchScript-like archive, Hugging Face safetensors), read back into identical weights and
identical features; fp16 storage; nested dicts and `module.`; corrupt, truncated and malicious files;
load() by name from the cache. With torch importable, files that torch itself wrote are read too."""
import os
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
from _torch_files import to_hf, write_script_archive, write_torch_zip
from torch_reference import clip_from_minclip, require

import minclip
from minclip import backend, no_grad, to_numpy
from minclip.checkpoint import read_checkpoint, save_checkpoint
from minclip.model import build_model, create_model
from minclip.readers import CheckpointError, read_state_dict


# ----------------------------------------------------------------------------- fixtures and checks
@pytest.fixture(scope="module")
def tiny():
    backend.manual_seed(0)
    with backend.default_dtype(np.float32):
        model = create_model("tiny-vit").eval()
    return model, model.state_dict()


def features(model, seed=0):
    rng = np.random.default_rng(seed)
    R = model.visual.input_resolution
    images = backend.asarray(rng.standard_normal((2, 3, R, R)).astype(np.float32))
    tokens = rng.integers(1, model.vocab_size - 1, (2, 6))
    tokens[:, -1] = model.vocab_size - 1
    with no_grad():
        return to_numpy(model.encode_image(images)), to_numpy(model.encode_text(backend.asarray(tokens)))


def assert_same(loaded, sd, model=None):
    assert sorted(loaded) == sorted(sd)
    for k in sd:
        assert loaded[k].dtype == sd[k].dtype and loaded[k].shape == sd[k].shape, k
        np.testing.assert_array_equal(loaded[k], sd[k], err_msg=k)
    if model is not None:
        for ours, theirs in zip(features(build_model(loaded)), features(model)):
            np.testing.assert_array_equal(ours, theirs)


# ----------------------------------------------------------------------------- the formats
def test_torch_save_zip_fp32(tiny, tmp_path):
    model, sd = tiny
    path = write_torch_zip(tmp_path / "tiny.pt", sd)
    assert_same(read_state_dict(path), sd, model)


def test_torch_save_zip_fp16_upcast_by_load(tiny, tmp_path):
    model, sd = tiny
    half = OrderedDict((k, v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in sd.items())
    path = write_torch_zip(tmp_path / "half.pt", half)
    assert_same(read_state_dict(path), half)
    loaded, preprocess = minclip.load(str(path))
    assert loaded.dtype == np.float32 and not loaded.training
    for k, v in loaded.state_dict().items():
        np.testing.assert_array_equal(v, half[k].astype(v.dtype), err_msg=k)
    kept, _ = minclip.load(str(path), dtype="float16")
    assert kept.visual.conv1.weight.dtype == np.float16


def test_nested_dict_and_module_prefix(tiny, tmp_path):
    model, sd = tiny
    wrapped = {"epoch": 7, "name": "run", "state_dict": OrderedDict(("module." + k, v) for k, v in sd.items()),
               "optimizer": {"lr": 1e-3}}
    path = write_torch_zip(tmp_path / "epoch_7.pt", wrapped)
    assert_same(read_state_dict(path), sd, model)


def test_non_contiguous_view_and_shared_storage(tmp_path):
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = write_torch_zip(tmp_path / "t.pt", {"w": base.T, "b": base[1]})  # pickled contiguous by the writer
    sd = read_state_dict(path)
    np.testing.assert_array_equal(sd["w"], base.T)
    np.testing.assert_array_equal(sd["b"], base[1])


def test_torchscript_like_archive(tiny, tmp_path):
    model, sd = tiny
    extras = {"input_resolution": np.array(32, np.int64), "context_length": np.array(77, np.int64),
              "vocab_size": np.array(1024, np.int64)}
    mask = {"transformer.resblocks.0.attn_mask": np.zeros((77, 77), np.float32)}  # an attribute, not a buffer
    path = write_script_archive(str(tmp_path / "ViT-tiny.pt"), OrderedDict(list(sd.items()) + list(extras.items())),
                                other_tensors=mask)
    loaded = read_state_dict(path)
    assert "transformer.resblocks.0.attn_mask" not in loaded
    assert_same({k: v for k, v in loaded.items() if k not in extras}, sd, None)
    assert int(loaded["context_length"]) == 77
    for ours, theirs in zip(features(build_model(loaded)), features(model)):  # build_model drops the extras
        np.testing.assert_array_equal(ours, theirs)


def test_hugging_face_safetensors(tiny, tmp_path):
    from safetensors.numpy import save_file
    model, sd = tiny
    path = str(tmp_path / "model.safetensors")
    save_file(to_hf(sd), path)
    assert_same(read_state_dict(path), sd, model)


def test_hugging_face_non_quick_gelu_and_vision_only_rejected(tiny, tmp_path):
    from safetensors.numpy import save_file
    _, sd = tiny
    hf = to_hf(sd)
    (tmp_path / "a").mkdir()
    save_file(hf, str(tmp_path / "a" / "model.safetensors"))
    (tmp_path / "a" / "config.json").write_text('{"vision_config": {"hidden_act": "gelu"}}')
    with pytest.raises(CheckpointError, match="quick_gelu"):
        read_state_dict(tmp_path / "a" / "model.safetensors")
    save_file({k: v for k, v in hf.items() if k.startswith("vision_model.")}, str(tmp_path / "vision.safetensors"))
    with pytest.raises(CheckpointError, match="only for the ViT models"):
        read_state_dict(tmp_path / "vision.safetensors")


def test_npz_and_load_weights_dispatch(tiny, tmp_path):
    model, sd = tiny
    np.savez(tmp_path / "plain.npz", **sd)
    assert_same(read_state_dict(tmp_path / "plain.npz"), sd)
    save_checkpoint(tmp_path / "ckpt.npz", sd, step=3)
    assert_same(read_state_dict(tmp_path / "ckpt.npz"), sd)
    write_torch_zip(tmp_path / "w.pth", sd)
    assert_same(read_checkpoint(tmp_path / "w.pth")[0], sd)


def test_bfloat16_storage_widened_to_float32(tmp_path):
    values = np.array([1.5, -2.0, 3.140625], np.float32)  # exact in bfloat16: the top 16 bits of float32
    raw = (values.view(np.uint32) >> 16).astype(np.uint16)  # written as torch.BFloat16Storage (STORAGE_NAMES)
    sd = read_state_dict(write_torch_zip(tmp_path / "bf.pt", {"x": raw}))
    assert sd["x"].dtype == np.float32
    np.testing.assert_array_equal(sd["x"], values)


# ----------------------------------------------------------------------------- bad files
def test_malicious_pickle_runs_nothing(tmp_path):
    target = tmp_path / "pwned.txt"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {target}",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"state_dict": Evil()}, protocol=2))
        zf.writestr("archive/version", "3\n")
    with pytest.raises(CheckpointError, match=r"global (posix|os)\.system.*ran nothing"):
        read_state_dict(path)
    assert not target.exists()

    class EvilOpen:
        def __reduce__(self):
            return (open, (str(target), "w"))

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(EvilOpen(), protocol=2))
    with pytest.raises(CheckpointError, match=r"global (io|builtins|_io)\.open"):
        read_state_dict(path)
    assert not target.exists()


def test_truncated_and_corrupt_files(tiny, tmp_path):
    _, sd = tiny
    good = write_torch_zip(tmp_path / "good.pt", sd).read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_state_dict(tmp_path / "cut.pt")
    from safetensors.numpy import save_file
    save_file(to_hf(sd), str(tmp_path / "m.safetensors"))
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="safetensors"):
        read_state_dict(tmp_path / "cut.safetensors")
    (tmp_path / "junk.bin").write_bytes(b"hello, not weights at all")
    with pytest.raises(CheckpointError, match="unknown format"):
        read_state_dict(tmp_path / "junk.bin")
    (tmp_path / "old.pt").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointError, match="legacy"):
        read_state_dict(tmp_path / "old.pt")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_state_dict(tmp_path / "missing.pt")
    with zipfile.ZipFile(tmp_path / "nodata.pt", "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
    with pytest.raises(CheckpointError, match="no state_dict"):
        read_state_dict(tmp_path / "nodata.pt")


def test_missing_storage_is_reported(tiny, tmp_path):
    _, sd = tiny
    path = write_torch_zip(tmp_path / "a.pt", sd)
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist() if n != "archive/data/3"}
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in entries.items():
            zf.writestr(n, b)
    with pytest.raises(CheckpointError, match="archive/data/3 is missing"):
        read_state_dict(path)


# ----------------------------------------------------------------------------- load() by name
def test_load_by_name_from_cache(tiny, tmp_path, monkeypatch):
    model, sd = tiny
    monkeypatch.setenv("MINCLIP_CACHE", str(tmp_path))
    assert "ViT-B/32" in minclip.available_models() and len(minclip.available_models()) == 9
    with pytest.raises(FileNotFoundError, match=f"ViT-B-32.pt.*{tmp_path}|{tmp_path}.*ViT-B-32.pt"):
        minclip.load("ViT-B/32")
    write_torch_zip(tmp_path / "ViT-B-32.pt", sd)  # a tiny model under the big one's file name
    loaded, preprocess = minclip.load("ViT-B/32")
    for ours, theirs in zip(features(loaded), features(model)):
        np.testing.assert_array_equal(ours, theirs)
    from PIL import Image
    assert preprocess(Image.new("RGB", (50, 40))).shape == (3, 64, 64)  # tiny-vit sees 64x64 images
    with pytest.raises(FileNotFoundError, match="neither a file nor a model name"):
        minclip.load("ViT-B/99")
    with pytest.raises(ValueError, match="not a float type"):
        minclip.load("ViT-B/32", dtype="int32")


# ----------------------------------------------------------------------------- full-size shapes
@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViT-B-32", "RN50"])
def test_full_size_shapes_load(name, tmp_path):
    backend.manual_seed(0)
    with backend.default_dtype(np.float32):
        sd = create_model(name).state_dict()
    half = OrderedDict((k, v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in sd.items())
    write_script_archive(str(tmp_path / f"{name}.pt"), half)
    model, _ = minclip.load(str(tmp_path / f"{name}.pt"))
    assert model.visual.input_resolution == 224
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, half[k].astype(np.float32), err_msg=k)


# ----------------------------------------------------------------------------- files torch itself wrote
def test_files_written_by_torch(tiny, tmp_path):
    torch = require("model")
    model, sd = tiny
    theirs = clip_from_minclip(model).eval()
    torch.save({"epoch": 1, "state_dict": {"module." + k: v for k, v in theirs.state_dict().items()}},
               tmp_path / "saved.pt")
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in theirs.state_dict().items()},
               tmp_path / "half.pt")
    assert_same(read_state_dict(tmp_path / "saved.pt"), sd, model)
    half = read_state_dict(tmp_path / "half.pt")
    for k, v in sd.items():
        np.testing.assert_array_equal(half[k], v.astype(np.float16) if v.dtype == np.float32 else v, err_msg=k)
    try:
        scripted = torch.jit.script(theirs)
    except Exception:  # the reference model is written for eager mode; tracing needs no annotations
        R = model.visual.input_resolution
        images, tokens = torch.zeros(1, 3, R, R), torch.full((1, 77), 1023, dtype=torch.long)
        scripted = torch.jit.trace(theirs, (images, tokens), check_trace=False)
    torch.jit.save(scripted, tmp_path / "scripted.pt")
    loaded = read_state_dict(tmp_path / "scripted.pt")
    assert_same({k: v for k, v in loaded.items() if k in sd}, sd, model)
    assert set(loaded) - set(sd) <= {"input_resolution", "context_length", "vocab_size"}
