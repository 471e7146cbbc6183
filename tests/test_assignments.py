"""The nbgrader course in notebooks/assignments/, graded end to end the way an instructor runs it.

In one temporary copy of the course: `nbgrader generate_assignment` for every assignment, then three
submissions per assignment, all autograded in one call, scores read from the gradebook:
  solution  the source notebook's answers pasted into the release   -> full marks
  release   the untouched release (NotImplementedError everywhere)   -> 0, and the grader still finishes
  wrong     the solution with one classic mistake from MISTAKES      -> less than full marks
We assert on scores, never on nbgrader's exit status: autograde exits 0 even when a cell crashes.
Needs nbgrader (pip install -e ".[course]"); skipped without it.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "notebooks" / "assignments"
NAMES = sorted(p.name for p in (COURSE / "source").iterdir() if p.is_dir())

# One classic mistake per assignment: (text in a solution cell, what the wrong submission has instead).
MISTAKES = {
    "a01": ("sum_to(g * self.a, self.b.shape)", "sum_to(g * self.b, self.b.shape)"),      # product rule: wrong factor
    "a02": ("return gx / n", "return gx"),                                                 # forgot the mean's 1/N
    "a03": ("gxhat - gxhat.mean(-1, keepdims=True) - xhat * (gxhat * xhat).mean(-1, keepdims=True)",
            "gxhat - gxhat.mean(-1, keepdims=True)"),                                      # dropped the variance path
    "a04": ("/ math.sqrt(d)", ""),                                                         # missing 1/sqrt(d)
    "a05": ("gx[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride] +=",
            "gx[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride] ="),              # overlaps overwrite
    "a06": ("concat([cls, patches], axis=1)", "concat([patches, cls], axis=1)"),           # class token last
    "a07": ("loss = (loss_i + loss_t) / 2", "loss = loss_t"),                              # one direction only
    "a08": ("counts[pair] = counts.get(pair, 0) + count", "counts[pair] = counts.get(pair, 0) + 1"),  # no weights
    "a09": ("p *= 1 - lr * weight_decay", "grad = grad + weight_decay * p"),               # coupled (Adam) decay
    "a10": ("emb = normalize(emb.mean(axis=1))", "emb = emb.mean(axis=1)"),                 # no renormalisation
}


def _read(path):
    return json.loads(Path(path).read_text())


def _solution_cells(nb):
    return {c["metadata"]["nbgrader"]["grade_id"]: "".join(c["source"]) for c in nb["cells"]
            if c["metadata"].get("nbgrader", {}).get("solution")}


def _region_lines(src, begin, end):
    """Non-blank lines strictly between the begin and end markers."""
    out, inside = [], False
    for line in src.splitlines():
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside and line.strip():
            out.append(line.strip())
    return out


def _nbgrader(args, cwd):
    """Run nbgrader like an instructor would, with the two environment settings it silently needs."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # autograde runs `alembic`
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")           # the kernel imports this minclip
    env["MINCLIP_BACKEND"] = "numpy"  # students write NumPy (np.exp on raw arrays): grade on CPU even in a CuPy run
    r = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _submit(course, student, name, source_nb, release_nb, mistake=None):
    """A student's notebook: the release with the solution cells' text pasted in (optionally with a mistake)."""
    nb = json.loads(json.dumps(release_nb))
    answers = _solution_cells(source_nb)
    found = mistake is None
    for cell in nb["cells"]:
        gid = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if gid in answers:
            src = answers[gid]
            if mistake and mistake[0] in src:
                src, found = src.replace(mistake[0], mistake[1]), True
            cell["source"] = src
    assert found, f"{name}: the mistake's text {mistake[0]!r} is in no solution cell; update MISTAKES"
    out = course / "submitted" / student / name / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(nb))


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A graded copy of the course: generate every assignment, submit three students, autograde all."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(COURSE / "nbgrader_config.py", course)
    shutil.copytree(COURSE / "source", course / "source")
    _nbgrader(["generate_assignment", "a*", "--force"], course)  # a glob: every assignment in one call
    for name in NAMES:
        source_nb = _read(course / "source" / name / f"{name}.ipynb")
        release_nb = _read(course / "release" / name / f"{name}.ipynb")
        _submit(course, "solution", name, source_nb, release_nb)
        _submit(course, "wrong", name, source_nb, release_nb, MISTAKES[name])
        untouched = course / "submitted" / "release" / name / f"{name}.ipynb"
        untouched.parent.mkdir(parents=True)
        shutil.copy(course / "release" / name / f"{name}.ipynb", untouched)
    _nbgrader(["autograde", "a*", "--force"], course)
    from nbgrader.api import Gradebook
    scores = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for name in NAMES:
            for student in ("solution", "release", "wrong"):
                s = gb.find_submission(name, student)
                scores[name, student] = (s.score, s.max_score)
    return course, scores


def test_every_assignment_has_a_mistake_and_the_sources_are_up_to_date():
    assert len(NAMES) >= 8, f"the course has {len(NAMES)} assignments; the issue asks for at least eight"
    assert set(MISTAKES) == set(NAMES), "every assignment needs exactly one wrong submission in MISTAKES"
    r = subprocess.run([sys.executable, str(COURSE / "make_assignments.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, f"source notebooks differ from specs/; run make_assignments.py: {r.stderr}"


@pytest.mark.parametrize("name", NAMES)
def test_solution_scores_full_marks(course, name):
    score, max_score = course[1][name, "solution"]
    assert max_score > 0 and score == max_score, f"{name}: the reference solution scores {score}/{max_score}"


@pytest.mark.parametrize("name", NAMES)
def test_untouched_release_scores_zero(course, name):
    score, max_score = course[1][name, "release"]
    assert score == 0, f"{name}: the release with no answers scores {score}/{max_score}; a test passes without code"


@pytest.mark.parametrize("name", NAMES)
def test_wrong_submission_loses_points(course, name):
    score, max_score = course[1][name, "wrong"]
    assert score < max_score, f"{name}: the mistake {MISTAKES[name][1]!r} still scores full marks; the tests miss it"


@pytest.mark.parametrize("name", NAMES)
def test_release_hides_solutions_and_hidden_tests(course, name):
    source_nb = _read(course[0] / "source" / name / f"{name}.ipynb")
    release = "\n".join("".join(c["source"]) for c in _read(course[0] / "release" / name / f"{name}.ipynb")["cells"])
    solution, hidden, visible = [], [], []
    for c in source_nb["cells"]:
        src = "".join(c["source"])
        solution += _region_lines(src, "### BEGIN SOLUTION", "### END SOLUTION")
        hidden += _region_lines(src, "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
        visible += [line.strip() for line in src.split("### BEGIN HIDDEN TESTS")[0].splitlines()]
    assert solution and hidden, f"{name}: the source notebook needs solution regions and hidden tests"
    # Every solution line must be gone; a hidden test may repeat a visible line (say `opt.step()`).
    leaked = [line for line in solution if line in release]
    leaked += [line for line in hidden if line not in visible and line in release]
    assert not leaked, f"{name}: the released notebook still contains {leaked[:3]}"
