"""Write the student version of the numbered notebooks: every exercise's answer removed, outputs cleared.

    python notebooks/make_student.py                  # all notebooks -> notebooks/student/
    python notebooks/make_student.py 03 07 -o ~/course   # only 03 and 07, into ~/course

An exercise is a code cell whose answer sits between `### BEGIN SOLUTION` and `### END SOLUTION`; the
check cell after it compares the answer with minclip or with central differences. nbgrader's own
ClearSolutions preprocessor replaces each region with `raise NotImplementedError()` (the numbered notebooks
are not an nbgrader assignment, so its cell-metadata requirement is switched off), and the outputs are
cleared, so the student sees neither the answer nor what it printed. Run top to bottom, a student notebook
stops at the first check whose exercise is not written yet, with a sentence that names it.
Needs nbgrader: pip install -e ".[course]".
"""
import argparse
import copy
import sys
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ClearOutputPreprocessor
from nbgrader.preprocessors import ClearSolutions

HERE = Path(__file__).resolve().parent
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


def student_version(nb):
    """A copy of notebook `nb` with every solution region replaced by `raise NotImplementedError()` and
    every output cleared."""
    nb = copy.deepcopy(nb)
    nb, _ = ClearSolutions(enforce_metadata=False).preprocess(nb, {})
    nb, _ = ClearOutputPreprocessor().preprocess(nb, {})
    return nb


def main(argv=None):
    sys.path.insert(0, str(HERE))
    from run_all import numbered_notebooks

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("prefixes", nargs="*", help="only notebooks whose names start with these (e.g. 03 07)")
    p.add_argument("-o", "--out", default=str(HERE / "student"), help="folder for the student notebooks")
    args = p.parse_args(argv)
    paths = numbered_notebooks(args.prefixes)
    if not paths:
        sys.exit(f"make_student: no notebook in {HERE} starts with {args.prefixes}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        exercises = sum(BEGIN in c.source for c in nb.cells if c.cell_type == "code")
        nbformat.write(student_version(nb), out / path.name)
        print(f"{out / path.name}: {exercises} exercise(s)")


if __name__ == "__main__":
    main()
