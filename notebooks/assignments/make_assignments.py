"""Build the nbgrader source notebooks source/<name>/<name>.ipynb from specs/<name>.py.

Each spec is a plain Python file cut into cells by marker lines (jupytext's "percent" style):

    # %% [markdown]            a text cell (LaTeX math allowed)
    # %% setup                 a locked, read-only code cell (imports, helpers)
    # %% solution <grade_id>   an autograded answer cell; the code between ### BEGIN SOLUTION and
                               ### END SOLUTION is what `nbgrader generate_assignment` removes
    # %% test <grade_id> <pts> a locked autograder test cell worth <pts> points; lines between
                               ### BEGIN HIDDEN TESTS and ### END HIDDEN TESTS are withheld from students

and each cell gets nbgrader's own metadata (schema_version 3), so the notebooks open in Jupyter's
"Create Assignment" view exactly as if an instructor had made them there. Run from anywhere:

    python notebooks/assignments/make_assignments.py          # rewrite every source notebook
    python notebooks/assignments/make_assignments.py --check  # exit 1 if one is out of date
"""
import re
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
MARKER = re.compile(r"^# %% ?(.*)$")


def _meta(kind, grade_id, points=None):
    """nbgrader's cell metadata for one of the three cell types we use."""
    m = {"grade": kind == "test", "grade_id": grade_id, "locked": kind != "solution",
         "schema_version": 3, "solution": kind == "solution", "task": False}
    if points is not None:
        m["points"] = points
    return {"nbgrader": m}


def parse(text, name):
    """Spec text -> list of nbformat cells. Raises ValueError naming the spec and the bad marker."""
    cells, kind, args, lines, n_setup = [], None, [], [], 0

    def flush():
        nonlocal n_setup
        if kind is None:
            return
        src = "\n".join(lines).strip("\n")
        if kind == "[markdown]":  # text lines are comments in the spec: drop the "# "
            cells.append(nbformat.v4.new_markdown_cell("\n".join(re.sub(r"^# ?", "", x) for x in src.splitlines())))
        elif kind == "setup":
            n_setup += 1
            cells.append(nbformat.v4.new_code_cell(src, metadata=_meta("setup", f"{name}-setup-{n_setup}")))
        elif kind == "solution":
            if "### BEGIN SOLUTION" not in src or "### END SOLUTION" not in src:
                raise ValueError(f"{name}: solution cell {args[0]} has no ### BEGIN SOLUTION / ### END SOLUTION region")
            cells.append(nbformat.v4.new_code_cell(src, metadata=_meta("solution", args[0])))
        else:
            cells.append(nbformat.v4.new_code_cell(src, metadata=_meta("test", args[0], int(args[1]))))

    for line in text.splitlines():
        m = MARKER.match(line)
        if m:
            flush()
            kind, *args = m.group(1).split() or ["code"]
            if kind not in ("[markdown]", "setup", "solution", "test") or \
                    (kind == "solution" and len(args) != 1) or (kind == "test" and len(args) != 2):
                raise ValueError(f"{name}: bad cell marker {line!r}; use '# %% [markdown]', '# %% setup', "
                                 "'# %% solution <grade_id>' or '# %% test <grade_id> <points>'")
            lines = []
        else:
            lines.append(line)
    flush()
    ids = [c.metadata["nbgrader"]["grade_id"] for c in cells if "nbgrader" in c.metadata]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{name}: grade_ids must be unique, got {ids}")
    return cells


def build(name):
    """The source notebook for specs/<name>.py, with the python3 kernel nbgrader runs."""
    nb = nbformat.v4.new_notebook()
    nb.cells = parse((HERE / "specs" / f"{name}.py").read_text(), name)
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    for i, c in enumerate(nb.cells):  # stable ids, so a rebuild gives a byte-identical file
        c["id"] = f"{name}-{i:02d}"
    return nb


def points(name):
    """Total points of one assignment."""
    return sum(c.metadata["nbgrader"].get("points", 0) for c in build(name).cells if "nbgrader" in c.metadata)


def names():
    return sorted(p.stem for p in (HERE / "specs").glob("a*.py"))


def main(argv):
    stale = []
    for name in names():
        path = HERE / "source" / name / f"{name}.ipynb"
        text = nbformat.writes(build(name)) + "\n"
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"{path.relative_to(HERE)}  {points(name)} points")
    if stale:
        sys.exit("out of date (run make_assignments.py): " + ", ".join(stale))


if __name__ == "__main__":
    main(sys.argv[1:])
