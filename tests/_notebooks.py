"""Running the numbered notebooks in tests: a fresh kernel, quick mode, cells one at a time.

test_notebooks.py runs the notebooks without exercises top to bottom; test_exercises.py runs 01-10, trying
each exercise's stub and wrong answers before its solution. Both use `kernel` and `run`.
"""
import contextlib
import os
import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


def read(path):
    return nbformat.read(path, as_version=4)


@contextlib.contextmanager
def kernel(nb, workdir, monkeypatch):
    """A started python3 kernel for `nb` in quick mode (MINCLIP_QUICK=1: the training notebooks train for
    seconds), importing this checkout's minclip on the default backend, with `workdir` as its folder."""
    monkeypatch.setenv("MINCLIP_QUICK", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("MINCLIP_BACKEND", raising=False)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    with client.setup_kernel():
        yield client


def run(client, cell, index):
    """Execute one cell; raises nbclient's CellExecutionError (naming the exception) if it fails."""
    client.execute_cell(cell, index)


def exercises(nb):
    """[(index of the solution cell, index of its check cell)]: a check cell is the next code cell and
    wraps its checks in `with exercise(...)`."""
    pairs = []
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    for i in code:
        if BEGIN in nb.cells[i].source:
            later = [j for j in code if j > i]
            pairs.append((i, later[0] if later else None))
    return pairs


def exercise_name(check_source):
    m = re.search(r"with exercise\((['\"])(.*?)\1", check_source)
    return m.group(2) if m else None
