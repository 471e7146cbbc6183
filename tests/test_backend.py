"""The array backend: NumPy by default, CuPy on request with clear errors, seeded random numbers,
host copies, the default dtype, and the `minclip info` command."""
import json
import math
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from _helpers import cupy_usable

import minclip
import minclip.cli
from minclip import Tensor, backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- choosing the backend
def test_default_backend_is_numpy_unless_the_environment_asks():
    expected = os.environ.get("MINCLIP_BACKEND", "numpy").lower()
    assert backend.current() == expected
    if expected == "numpy":
        assert backend.xp is np
        assert isinstance(Tensor([1.0, 2.0]).data, np.ndarray)


def test_use_returns_the_array_module_and_ignores_case():
    assert backend.use("NumPy") is np
    assert backend.current() == "numpy" and backend.xp is np


def test_cupy_without_cupy_raises_backend_error_with_install_hint():
    if cupy_usable():
        pytest.skip("CuPy and a GPU are usable here")
    before = backend.current()
    with pytest.raises(backend.BackendError, match="cupy") as e:
        backend.use("cupy")
    if backend.cupy is None:
        assert "pip install minclip[cuda12]" in str(e.value)
    assert backend.current() == before  # a failed switch changes nothing
    assert isinstance(e.value, RuntimeError)


@pytest.mark.parametrize("runtime, message", [
    (types.SimpleNamespace(getDeviceCount=lambda: 0), "no CUDA GPU was found"),
    (types.SimpleNamespace(getDeviceCount=lambda: 1 / 0), "no CUDA GPU is usable"),
])
def test_cupy_installed_but_no_gpu_names_the_problem(monkeypatch, runtime, message):
    monkeypatch.setattr(backend, "cupy", types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime)))
    before = backend.current()
    with pytest.raises(backend.BackendError, match=message):
        backend.use("cupy")
    assert backend.current() == before


def test_unknown_backend_is_a_value_error_listing_the_choices():
    with pytest.raises(ValueError, match=r"'bogus'.*numpy.*cupy"):
        backend.use("bogus")


# ----------------------------------------------------------------------------- arrays and host copies
def test_asarray_lands_on_the_current_backend_without_copying():
    a = backend.asarray(np.arange(6.0))
    assert backend.get_array_module(a) is backend.xp
    assert backend.asarray(a) is a
    assert backend.asarray([1, 2]).dtype == np.int64
    assert backend.asarray([1, 2], dtype=np.float32).dtype == np.float32


def test_asarray_and_random_numbers_follow_like_not_the_default():
    host_array = np.ones(2, np.float32)
    a = backend.asarray([1.5, 2.5], like=host_array)
    assert type(a) is np.ndarray and a.dtype == np.float64  # like= picks the backend, not the dtype
    assert backend.asarray(host_array, like=Tensor(host_array)) is host_array
    assert type(backend.randn(2, 3, like=host_array)) is np.ndarray
    assert type(backend.rand(2, like=host_array)) is np.ndarray
    np.testing.assert_array_equal(backend.randn(2, rng=5, like=host_array),
                                  backend.to_numpy(backend.randn(2, rng=5)))  # same numbers on every backend


def test_array_module_checks_a_backend_without_switching_to_it():
    before = backend.current()
    assert backend.array_module("NUMPY") is np and backend.current() == before
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        backend.array_module("gpu")
    if not cupy_usable():
        with pytest.raises(backend.BackendError):
            backend.array_module("cupy")
    assert backend.current() == before


def test_get_array_module_unwraps_tensors():
    a = backend.asarray(np.ones(3))
    assert backend.get_array_module(Tensor(a)) is backend.xp
    assert backend.get_array_module(a) is backend.xp
    assert backend.get_array_module(np.ones(3)) is np  # a NumPy array stays NumPy's, whatever the backend
    assert backend.unwrap(Tensor(a)) is a and backend.unwrap(a) is a and backend.unwrap(3) == 3


@pytest.mark.parametrize("value", [
    lambda: Tensor(backend.asarray(np.arange(4.0))),
    lambda: backend.asarray(np.arange(4.0)),
    lambda: np.arange(4.0),
    lambda: [0.0, 1.0, 2.0, 3.0],
])
def test_to_numpy_gives_a_host_array(value):
    out = minclip.to_numpy(value())
    assert type(out) is np.ndarray
    np.testing.assert_array_equal(out, np.arange(4.0))


def test_tensor_numpy_and_item():
    t = Tensor(backend.asarray(np.array([[1.5, 2.0]])))
    assert type(t.numpy()) is np.ndarray and t.numpy().tolist() == [[1.5, 2.0]]
    s = Tensor(backend.asarray(np.array(2.5)))
    assert s.item() == 2.5 and isinstance(s.item(), float)


# ----------------------------------------------------------------------------- random numbers
def test_seeded_randn_repeats_and_lives_on_the_backend():
    a, b = backend.randn(3, 4, rng=7), backend.randn(3, 4, rng=7)
    assert backend.get_array_module(a) is backend.xp and a.shape == (3, 4)
    assert a.dtype == backend.get_default_dtype()
    np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))
    # drawn by NumPy, then moved: the same numbers on every backend
    ref = np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(backend.to_numpy(a), ref)
    assert not np.array_equal(backend.to_numpy(a), backend.to_numpy(backend.randn(3, 4, rng=8)))
    np.testing.assert_allclose(backend.to_numpy(backend.randn(3, 4, std=0.5, rng=7, dtype=np.float64)),
                               0.5 * np.random.default_rng(7).standard_normal((3, 4)))


def test_rand_randint_and_manual_seed():
    backend.manual_seed(1)
    a = backend.to_numpy(backend.rand(5))
    backend.manual_seed(1)
    np.testing.assert_array_equal(a, backend.to_numpy(backend.rand(5)))
    assert ((0 <= a) & (a < 1)).all()
    r = backend.randint(2, 5, (100,), rng=0)
    assert r.dtype == np.int64 and backend.get_array_module(r) is backend.xp
    assert set(backend.to_numpy(r).tolist()) == {2, 3, 4}
    g = np.random.default_rng(3)
    assert backend.get_rng(g) is g and isinstance(backend.get_rng(3), np.random.Generator)


# ----------------------------------------------------------------------------- dtypes
def test_default_dtype_context_manager():
    assert Tensor(1.5).dtype == np.float32
    with backend.default_dtype(np.float64):
        assert backend.get_default_dtype() == np.float64
        assert Tensor(1.5).dtype == np.float64 and Tensor([1.0, 2.0]).dtype == np.float64
        assert backend.randn(2).dtype == np.float64
    assert Tensor(1.5).dtype == np.float32
    assert Tensor([1, 2]).dtype == np.int64  # integers are not floats: the default dtype leaves them alone


def test_default_dtype_is_restored_after_an_error_and_must_be_floating():
    with pytest.raises(KeyError):
        with backend.default_dtype(np.float64):
            raise KeyError
    assert backend.get_default_dtype() == np.float32
    with pytest.raises(ValueError, match="floating"):
        backend.set_default_dtype(np.int32)


# ----------------------------------------------------------------------------- special functions
def test_erf_matches_math_erf_including_0d():
    xs = np.linspace(-3, 3, 7)
    np.testing.assert_allclose(backend.to_numpy(backend.erf(backend.asarray(xs))), [math.erf(v) for v in xs],
                               rtol=1e-12)
    assert float(backend.erf(backend.asarray(np.array(0.5)))) == pytest.approx(math.erf(0.5), rel=1e-12)
    assert backend.erf(backend.asarray(xs.astype(np.float32))).dtype == np.float32


def test_scatter_add_accumulates_repeated_indices():
    target = backend.asarray(np.zeros(4))
    backend.scatter_add(target, backend.asarray(np.array([1, 1, 3])), backend.asarray(np.array([1.0, 2.0, 5.0])))
    assert backend.to_numpy(target).tolist() == [0.0, 3.0, 0.0, 5.0]


# ----------------------------------------------------------------------------- `minclip info`
def test_info_dict():
    info = backend.info()
    assert {"backend", "device", "blas", "numpy", "default_dtype", "cpu_count", "cupy"} <= set(info)
    assert info["backend"] == backend.current()
    assert all(isinstance(v, str) for v in info.values())


def test_cli_main_info_returns_0_and_prints_backend(capsys):
    assert minclip.cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backend" in out and backend.current() in out


def test_cli_info_asking_for_an_unusable_cupy_exits_1_with_one_line(capsys):
    if cupy_usable():
        pytest.skip("CuPy and a GPU are usable here")
    assert minclip.cli.main(["info", "--backend", "cupy"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("minclip: error:") and "cupy" in err


def test_python_m_minclip_cli_info():
    r = subprocess.run([sys.executable, "-m", "minclip.cli", "info"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "backend" in r.stdout and "device" in r.stdout


FAULTS = """
import resource, sys
import numpy as np
from minclip import backend
kept = backend.keep_freed_memory() if sys.argv[1] == "keep" else None
def step():  # like a training step: many activations alive at once, all freed at the end
    return [np.ones(2 ** 20, np.float32) for _ in range(40)]  # 40 x 4 MB, each page written once
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_page_faults_from_step_to_step():
    """Five "steps" of 40 arrays of 4 MB (1,024 pages each): by default glibc returns the freed memory
    to the kernel and every step faults its ~40,000 pages in again; after keep_freed_memory() the
    next step reuses them."""
    runs = {mode: subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
            for mode in ("default", "keep")}
    (_, default_faults), (kept, kept_faults) = [r.stdout.split() for r in runs.values()]
    assert kept == "True"
    assert int(default_faults) > 5 * 20_000 and int(kept_faults) < 2_000, (default_faults, kept_faults)


class _NoDevice(Exception):
    """What CuPy raises from cudaGetDeviceCount on a machine with its wheel but no GPU driver."""


def _cupy_without_a_device():
    """A stand-in for an installed CuPy on a machine with no GPU: importable, but every CUDA call fails."""
    def no_device():
        raise _NoDevice("cudaErrorNoDevice: no CUDA-capable device is detected")
    runtime = types.SimpleNamespace(getDeviceCount=no_device)
    return types.SimpleNamespace(ndarray=type("ndarray", (), {}), cuda=types.SimpleNamespace(runtime=runtime),
                                 __version__="14.0.0")


def test_cupy_installed_without_a_device_is_one_clear_error(monkeypatch, capsys):
    """With the CuPy wheel but no GPU, choosing cupy says there is no device, in one line, and changes nothing;
    the command line prints it and exits 1 (not a traceback from inside CUDA)."""
    monkeypatch.setattr(backend, "cupy", _cupy_without_a_device())
    before = backend.current()
    with pytest.raises(backend.BackendError, match="no CUDA GPU is usable: cudaErrorNoDevice"):
        backend.use("cupy")
    assert backend.current() == before
    assert minclip.cli.main(["info", "--backend", "cupy"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minclip: error: backend 'cupy' requested but no CUDA GPU"), err


def test_the_gpu_check_fails_loudly_without_a_device(tmp_path):
    """.ci/gpu-check never skips: on a machine without a GPU it stops at once with a non-zero status."""
    import shutil
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.startswith("GPU"):
            pytest.skip("this machine has a GPU: the check would run in full")
    r = subprocess.run(["bash", os.path.join(ROOT, ".ci", "gpu-check"), str(tmp_path)], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, OUT=""))
    assert r.returncode == 2 and "gpu-check: FAILED: no CUDA device" in r.stderr, (r.returncode, r.stderr)
    assert json.loads((tmp_path / "summary.json").read_text())["error"] == "no CUDA device"
