"""Hostile and malformed weight files: each gives one CheckpointError with a message, within bounded memory,
and runs nothing; valid files of every format still load.

The files are made here by hand, the way a corrupted download or a hostile upload would look: tensor views
with sizes that are not integers, huge strides, zero strides claiming 10**12 elements; pickles that rename a
storage type, nest 100,000 deep, claim a 1 TiB byte string or a memo index of 2**27; zip entries that
decompress to 1 GiB, are encrypted or use an unknown compression method; a storage in byte order 'middle';
.npy headers claiming shapes the file does not hold; code-execution payloads. They are read in a child
process whose address space is capped at 1 GiB (resource.RLIMIT_AS), so a reader that believed a size would
die there with a MemoryError, and the test would see it.
"""
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from _torch_files import Global, TorchPickler, write_script_archive, write_torch_zip

from minclip.checkpoint import save_checkpoint
from minclip.readers import read_state_dict

ROOT = Path(__file__).parent.parent
LIMIT = 1 << 30  # the child's address space


# ----------------------------------------------------------------------------- making the files
class View:
    """A tensor in a pickle: _rebuild_tensor_v2(storage `key` of `numel` floats, offset, size, stride)."""

    def __init__(self, key, numel, offset, size, stride):
        self.storage, self.args = ("__storage__", key, np.zeros(numel, np.float32)), (offset, size, stride)

    def __reduce__(self):
        return Global("torch._utils", "_rebuild_tensor_v2"), (self.storage, *self.args, False, OrderedDict())


class RenamedStorage(TorchPickler):
    """Writes the storage type of every persistent id as GLOBAL torch.FloatStorage followed by a BUILD that
    renames it."""

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, Global) and obj.name == "FloatStorage":
            super().save(obj)
            super().save({"name": "NoSuchStorage"})
            return self.write(pickle.BUILD)
        return super().save(obj, save_persistent_id)


def torch_zip(path, obj, pickler=TorchPickler, byteorder="little", compression=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    p = pickler(buf)
    p.dump(obj)
    return raw_torch_zip(path, buf.getvalue(), p.storages if p.storages else [np.zeros(1, np.float32).tobytes()],
                         byteorder, compression)


def raw_torch_zip(path, pickled, storages, byteorder="little", compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        zf.writestr("archive/data.pkl", pickled)
        zf.writestr("archive/byteorder", byteorder)
        for key, raw in enumerate(storages):
            zf.writestr(f"archive/data/{key}", raw)
    return path


def view_file(path, numel, offset, size, stride):
    buf = io.BytesIO()
    p = TorchPickler(buf)
    p.dump({"w": View(0, numel, offset, size, stride)})
    return raw_torch_zip(path, buf.getvalue(), [np.zeros(numel, np.float32).tobytes()])


def deep_tuple(n):
    return b"\x80\x02" + b"(" * n + b")" + b"t" * n + b"."  # MARK x n, (), TUPLE x n


def deep_list(n):
    """Lists nested n deep on a stack two items high: each new list is memoised, appended, popped, fetched."""
    out = [b"\x80\x02]"]
    for i in range(n):
        out.append(b"]r" + struct.pack("<I", i) + b"a0j" + struct.pack("<I", i))
    return b"".join(out) + b"."


def zip_bomb(path, nbytes=LIMIT):
    """data.pkl deflates from about 1 MB to `nbytes` of zeros."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("archive/data.pkl", "w", force_zip64=True) as f:
            chunk = bytes(16 << 20)
            for _ in range(nbytes // len(chunk)):
                f.write(chunk)
    return path


def patched_zip(path, flag=None, method=None):
    """A valid torch zip whose entries claim the encrypted flag or another compression method."""
    data = bytearray(Path(torch_zip(path, {"w": np.ones(3, np.float32)})).read_bytes())
    for sig, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        i = data.find(sig)
        while i >= 0:
            if flag is not None:
                data[i + flag_at:i + flag_at + 2] = struct.pack("<H", flag)
            if method is not None:
                data[i + method_at:i + method_at + 2] = struct.pack("<H", method)
            i = data.find(sig, i + 4)
    Path(path).write_bytes(bytes(data))
    return path


def npz_with_header(path, header, body=b""):
    """An .npz whose one array has the given .npy header dict."""
    text = repr(header).encode("latin1")
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("w.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + body)
    return path


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def cases(tmp):
    """{name: (path, regex the CheckpointError's message must match)}."""
    marker = tmp / "the-payload-ran"
    evil = tmp / "evil.pt"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"state_dict": Payload(marker)}, protocol=2))
    evil_eval = tmp / "evil_eval.pt"
    with zipfile.ZipFile(evil_eval, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02cbuiltins\neval\nX\x0c\x00\x00\x00open('x','w')\x85R.")
    return {
        "size not a tuple of ints": (view_file(tmp / "size.pt", 4, 0, ("a", "b"), (1, 1)), "not integers"),
        "stride 2**63": (view_file(tmp / "stride.pt", 4, 0, (2,), (2 ** 63,)), "reads element"),
        "zero stride, 10**12 elements": (view_file(tmp / "zero12.pt", 1, 0, (10 ** 6, 10 ** 6), (0, 0)),
                                         "more than a file of this size can hold"),
        "zero stride, 2 GB": (view_file(tmp / "zero2g.pt", 1, 0, (2 ** 29,), (0,)),
                              "more than a file of this size can hold"),
        "negative offset": (view_file(tmp / "neg.pt", 4, -1, (2,), (1,)), "negative"),
        "BUILD renames the storage type": (torch_zip(tmp / "build.pt", {"w": np.ones(2, np.float32)},
                                                     pickler=RenamedStorage), "modify the storage type"),
        "pickle nested 100,000 deep (marks)": (raw_torch_zip(tmp / "deep.pt", deep_tuple(100_000), []),
                                               "nests deeper than"),
        "pickle nested 100,000 deep (memo)": (raw_torch_zip(tmp / "deeplist.pt", deep_list(100_000), []),
                                              "no state_dict"),
        "BINBYTES8 claiming 1 TiB": (raw_torch_zip(tmp / "bytes8.pt", b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40)
                                                   + b"xx.", []), "pickle is corrupt"),
        "LONG_BINPUT index 2**27": (raw_torch_zip(tmp / "memo.pt", b"\x80\x02]r" + struct.pack("<I", 2 ** 27) + b".",
                                                  []), "memo index 134217728"),
        "zip entry inflating to 1 GiB": (zip_bomb(tmp / "bomb.pt"), "needs 1,073,741,824 bytes"),
        "encrypted entry": (patched_zip(tmp / "encrypted.pt", flag=0x1), "is encrypted"),
        "unknown compression method": (patched_zip(tmp / "method.pt", method=99), "compression method 99"),
        "byte order 'middle'": (torch_zip(tmp / "middle.pt", {"w": np.ones(2, np.float32)}, byteorder="middle"),
                                "byte order 'middle'"),
        "npy header claiming 10**12 floats": (npz_with_header(tmp / "huge.npz", {
            "descr": "<f4", "fortran_order": False, "shape": (10 ** 6, 10 ** 6)}), "claims shape"),
        "npy of Python objects": (npz_with_header(tmp / "objects.npz", {
            "descr": "|O", "fortran_order": False, "shape": (1,)}, pickle.dumps([1])), "Python objects"),
        "npy header that is code": (npz_with_header(tmp / "code.npz", "__import__('os').system('true')"),
                                    "corrupt header"),
        "pickle payload: os.system": (evil, r"global (posix|os)\.system.*ran nothing"),
        "pickle payload: builtins.eval": (evil_eval, r"global builtins\.eval.*ran nothing"),
        "truncated zip": (truncated(tmp), "corrupt or truncated"),
        "safetensors with a lying header": (lying_safetensors(tmp / "lying.safetensors"), "safetensors"),
        "not a weight file": (write(tmp / "notes.pt", b"hello, world, this is text"), "unknown format"),
    }, marker


def write(path, data):
    Path(path).write_bytes(data)
    return path


def truncated(tmp):
    data = Path(torch_zip(tmp / "full.pt", {"w": np.ones(1000, np.float32)})).read_bytes()
    return write(tmp / "truncated.pt", data[: len(data) * 2 // 3])


def lying_safetensors(path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [10 ** 6], "data_offsets": [0, 4 * 10 ** 6]}}).encode()
    return write(path, struct.pack("<Q", len(header)) + header + bytes(16))


CHILD = r"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from minclip.readers import CheckpointError, read_state_dict
out = {{}}
for name, path in json.load(sys.stdin).items():
    try:
        read_state_dict(path)
        out[name] = ["no error", ""]
    except CheckpointError as e:
        out[name] = ["CheckpointError", str(e)]
    except BaseException as e:
        out[name] = [type(e).__name__, str(e)]
    out[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
print(json.dumps(out))
"""


def test_every_hostile_file_gives_one_checkpoint_error_in_bounded_memory(tmp_path):
    files, marker = cases(tmp_path)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", CHILD.format(limit=LIMIT)], input=json.dumps(
        {name: str(path) for name, (path, _) in files.items()}), capture_output=True, text=True, env=env,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    import re
    wrong = [f"{name}: {kind}: {msg[:300]}" for name, (kind, msg, _) in results.items()
             if kind != "CheckpointError" or not re.search(files[name][1], msg)]
    assert not wrong, "these files did not give the expected CheckpointError:\n  " + "\n  ".join(wrong)
    for name, (_, msg, _) in results.items():
        assert str(files[name][0]) in msg, f"{name}: the message does not name the file: {msg}"
    assert not marker.exists() and not (tmp_path / "x").exists(), "a payload ran"


def test_valid_files_of_every_format_load(tmp_path):
    """The same weights written as a torch.save zip, a TorchScript-like archive, safetensors, a plain .npz, a
    minclip checkpoint, and an .npz renamed .pt and .bin: each reads back equal."""
    rng = np.random.default_rng(0)
    sd = OrderedDict([("visual.proj", rng.standard_normal((4, 3)).astype(np.float32)),
                      ("ln_final.weight", rng.standard_normal(4).astype(np.float16)),
                      ("token_embedding.weight", rng.standard_normal((5, 4)).astype(np.float32))])
    from safetensors.numpy import save_file
    paths = [write_torch_zip(str(tmp_path / "a.pt"), {"state_dict": sd}),
             write_script_archive(str(tmp_path / "script.pt"), sd),
             str(tmp_path / "c.safetensors"), str(tmp_path / "d.npz"),
             save_checkpoint(str(tmp_path / "e.npz"), sd, step=3)]
    save_file(dict(sd), paths[2])
    np.savez(paths[3], **sd)
    for ext in (".pt", ".bin"):
        paths.append(str(tmp_path / f"renamed{ext}"))
        Path(paths[-1]).write_bytes(Path(paths[3]).read_bytes())
    for path in paths:
        got = read_state_dict(path)
        assert set(got) == set(sd), path
        for k, v in sd.items():
            assert got[k].dtype == v.dtype and np.array_equal(got[k], v), (path, k)


@pytest.mark.parametrize("cmd", [["eval", "zeroshot", "--checkpoint"], ["classify", "--labels", "a,b", "x.png",
                                                                        "--checkpoint"]])
def test_the_command_line_prints_one_line_and_exits_1(tmp_path, capsys, cmd):
    from minclip.cli import main
    bad = view_file(tmp_path / "bad.pt", 1, 0, (2 ** 29,), (0,))
    assert main(cmd + [str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minclip: error: ") and str(bad) in err[0], err


def test_a_normal_size_file_fits_the_budget(tmp_path):
    """The budget (2 x the file + 64 MiB) leaves room for a file larger than the slack: 96 MB of weights."""
    big = {f"w{i}": np.ones((6, 1 << 20), np.float32) for i in range(4)}
    path = write_torch_zip(str(tmp_path / "big.pt"), big)
    assert sum(v.nbytes for v in read_state_dict(path).values()) == 4 * 6 * 4 << 20
