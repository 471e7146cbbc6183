"""The backend switch: NumPy by default, CuPy on request, with clear errors and seeded random numbers."""
import numpy as np
import pytest

import minclip
from minclip import backend


def test_default_backend_and_array_module():
    x = minclip.Tensor(backend.asarray(np.ones(3)))
    assert backend.get_array_module(x) is backend.xp
    assert backend.current() in ("numpy", "cupy")
    assert isinstance(minclip.to_numpy(x), np.ndarray) and isinstance(backend.to_numpy([1, 2]), np.ndarray)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="numpy.*cupy"):
        backend.use("bogus")


def test_cupy_without_cupy_or_gpu_names_the_problem():
    if backend.cupy is not None:
        pytest.skip("CuPy is installed here")
    with pytest.raises(backend.BackendError, match=r"pip install minclip\[cuda12\]"):
        backend.use("cupy")
    assert backend.current() == "numpy"  # a failed switch changes nothing


def test_seeded_random_numbers_repeat_and_live_on_the_backend():
    a = backend.randn(3, 4, rng=7)
    b = backend.randn(3, 4, rng=7)
    assert backend.get_array_module(a) is backend.xp and a.dtype == np.float32
    np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))
    np.testing.assert_array_equal(backend.to_numpy(a), np.random.default_rng(7).standard_normal((3, 4))
                                  .astype(np.float32))  # drawn by NumPy, then moved: same on every backend
    backend.manual_seed(1)
    c = backend.rand(2)
    backend.manual_seed(1)
    np.testing.assert_array_equal(backend.to_numpy(c), backend.to_numpy(backend.rand(2)))
    assert backend.randint(0, 5, (10,)).dtype == np.int64


def test_default_dtype_context():
    with backend.default_dtype(np.float64):
        assert minclip.Tensor(1.5).dtype == np.float64
    assert minclip.Tensor(1.5).dtype == np.float32
    with pytest.raises(ValueError):
        backend.set_default_dtype(np.int32)


def test_erf_matches_math():
    import math
    x = backend.asarray(np.linspace(-3, 3, 7))
    np.testing.assert_allclose(backend.to_numpy(backend.erf(x)), [math.erf(v) for v in np.linspace(-3, 3, 7)])


def test_info_lists_backend_device_and_blas():
    info = backend.info()
    assert {"backend", "device", "blas", "numpy"} <= set(info)
