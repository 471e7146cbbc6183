"""The numbered notebooks (the course path) are all there and each runs top to bottom in a fresh kernel.

Each is executed with nbclient and MINCLIP_QUICK=1, which makes the training notebooks train for seconds
instead of minutes; an error, a failed check cell included, fails the test and names the cell. The
notebooks with exercises (01-10) are run by test_exercises.py, which tries each exercise's stub and wrong
answers on the way; this file runs the others.
"""
import re

import nbformat
import pytest
from _notebooks import NOTEBOOKS, ROOT, exercises, kernel, read, run


def test_the_numbered_path_has_no_gap():
    """notebooks/NN_*.ipynb is the one list of the course path (README's and docs/index.md's tables are
    checked against it): numbered from 00 without a gap or a repeat."""
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(len(numbers))) and len(numbers) >= 13, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_closing_cell_and_no_stale_errors(path):
    """Every notebook ends with "What you learned" / "Try this", and its committed outputs have no error."""
    nb = nbformat.read(path, as_version=4)
    last = nb.cells[-1]
    assert last.cell_type == "markdown" and "What you learned" in last.source and "Try this" in last.source, \
        f"{path.name}: the last cell must be the 'What you learned / Try this' markdown cell"
    assert nb.cells[0].cell_type == "markdown" and re.match(r"# \d\d ", nb.cells[0].source), \
        f"{path.name}: the first cell must be a markdown title '# NN · ...'"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{path.name}: committed outputs contain an error; re-run python notebooks/run_all.py"


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if not exercises(read(p))], ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    nb = read(path)
    with kernel(nb, tmp_path, monkeypatch) as client:
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                run(client, cell, i)


def _run_all():
    import importlib.util
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "notebooks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_all_finds_the_numbered_notebooks_only():
    run_all = _run_all()
    assert run_all.numbered_notebooks() == NOTEBOOKS
    assert [p.name[:2] for p in run_all.numbered_notebooks(["03", "10"])] == ["03", "10"]


def test_run_all_names_an_unknown_prefix():
    with pytest.raises(SystemExit, match="no notebook in .* starts with"):
        _run_all().main(["99"])
