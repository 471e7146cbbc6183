"""Shared test setup. Data helpers (tensor, ints, close, ...) live in tests/_helpers.py.

Run the whole suite on the GPU with `MINCLIP_BACKEND=cupy pytest`: the backend module reads the
variable at import, and the tests make their data with NumPy and move it with `backend.asarray`.
"""
import pytest

from minclip import backend


@pytest.fixture(autouse=True)
def _restore_backend_and_dtype():
    """Undo a test's `backend.use(...)` or `set_default_dtype(...)`, so one test cannot leak into the next."""
    name, dtype = backend.current(), backend.get_default_dtype()
    yield
    if backend.current() != name:
        backend.use(name)
    backend.set_default_dtype(dtype)
