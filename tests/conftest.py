"""Shared test setup. Data helpers (tensor, ints, close, ...) live in tests/_helpers.py.

Run the whole suite on the GPU with `MINCLIP_BACKEND=cupy pytest`: the backend module reads the
variable at import, and the tests make their data with NumPy and move it with `backend.asarray`.
"""
import pytest

from minclip import backend

SESSION_BACKEND = backend.current()  # MINCLIP_BACKEND, read when minclip was imported


@pytest.fixture(autouse=True)
def _restore_backend_and_dtype():
    """Every test starts on the session's backend and dtype, and a test's `backend.use(...)` or
    `set_default_dtype(...)` is undone after it: neither a test nor a module-scoped fixture before it
    (one that trains, say) can leave the rest of the run on another backend."""
    dtype = backend.get_default_dtype()
    if backend.current() != SESSION_BACKEND:
        backend.use(SESSION_BACKEND)
    yield
    if backend.current() != SESSION_BACKEND:
        backend.use(SESSION_BACKEND)
    backend.set_default_dtype(dtype)
