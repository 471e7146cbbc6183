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

PATH = ["00_quickstart", "01_autograd_from_scratch", "02_gradient_checking", "03_layers",
        "04_attention_and_text_transformer", "05_image_encoders", "06_bpe_tokenizer", "07_figure3_loss",
        "08_training_on_shapes", "09_zero_shot_and_retrieval", "10_what_the_model_looks_at", "11_gpu_backend",
        "12_pretrained"]


def test_the_numbered_path_is_complete():
    names = [p.stem for p in NOTEBOOKS]
    missing = [n for n in PATH if n not in names]
    assert not missing, f"notebooks missing from notebooks/: {missing}"
    numbers = [n[:2] for n in names]
    assert len(numbers) == len(set(numbers)), f"two notebooks share a number: {names}"


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
