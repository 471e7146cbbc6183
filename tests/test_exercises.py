"""The exercises of notebooks 01-10 can fail, and fail in words.

Each exercise is a code cell whose answer sits between `### BEGIN SOLUTION` and `### END SOLUTION`, inside
a function body, followed by a check cell `with exercise("name"): ...` that compares it with minclip or
with central differences. Each notebook runs once, in one kernel (quick mode), cell by cell; at every
exercise the test first runs the student's version of the cell (the region replaced by
`raise NotImplementedError()`, as notebooks/make_student.py writes it) and the check must fail naming the
exercise, then each classic mistake of WRONG and the check must fail again, then the answer itself and
the check must pass. A student running the stripped notebook top to bottom therefore stops at the first
exercise still to do, with a sentence, not a traceback.
"""
import copy
import re
import sys

import pytest
from _notebooks import BEGIN, END, NOTEBOOKS, ROOT, exercise_name, exercises, kernel, read, run
from nbclient import exceptions as nbclient_exceptions

sys.path.insert(0, str(ROOT / "notebooks"))
from make_student import student_version  # noqa: E402  (needs nbgrader, from the [course] extra)

WITH_EXERCISES = [p for p in NOTEBOOKS if exercises(read(p))]

# (notebook number, exercise name) -> [(text of the answer, a classic mistake to put in its place)]
WRONG = {
    ("01", "MyTanh.backward"): [("g * (1 - self.y ** 2)", "g * (1 - self.y)")],           # y, not y squared
    ("01", "my_sum_to"): [("return g.sum(axis=ones, keepdims=True)", "return g.sum(axis=ones)")],  # axes dropped
    ("02", "numerical_grad"): [("(up - down) / (2 * h)", "(up - f(x)) / h"),                # one-sided difference
                               ("np.array(x, dtype=np.float64)", "np.array(x, dtype=np.float32)"),  # float32
                               ("x[i] = old                                    # put it back",
                                "pass                                          # not put back")],
    ("03", "layer_norm_backward"): [("- mean_g - xhat * mean_gx", "- xhat * mean_gx"),      # no path through mu
                                    ("- mean_g - xhat * mean_gx", "- mean_g"),              # no path through var
                                    ("return rstd * (gxhat", "return (gxhat"),              # 1/sigma forgotten
                                    ("gxhat = g * weight ", "gxhat = g ")],                 # gamma forgotten
    ("04", "my_causal_mask"): [("np.triu(np.full((L, L), -np.inf), 1)",
                                "np.triu(np.full((L, L), -np.inf), 0)"),                    # masks itself
                               ("np.triu(", "np.tril(")],                                   # masks the past
    ("04", "one_head"): [("/ np.sqrt(q.shape[-1])", ""),                                    # no 1/sqrt(d)
                         ("F.softmax(scores, axis=-1)", "F.softmax(scores, axis=-2)")],     # over the queries
    ("05", "patchify"): [(".transpose(0, 2, 4, 1, 3, 5)", ""),                              # reshape alone
                         ("(0, 2, 4, 1, 3, 5)", "(0, 4, 2, 1, 3, 5)")],                     # rows, columns swapped
    ("05", "my_im2col"): [("x[:, :, du:du + stride * Ho:stride, dv:dv + stride * Wo:stride]",
                           "x[:, :, du:du + Ho, dv:dv + Wo]"),                              # stride forgotten
                          ("stride].transpose(1, 0, 2, 3)", "stride].reshape(C, N, Ho, Wo)")],  # reshape, no swap
    ("06", "best_pair"): [("min(counts, key=lambda p: (-counts[p], p))",
                           "counts.most_common(1)[0][0]")],                                 # ties: first seen
    ("06", "merge_pair"): [("i += 2", "i += 1")],                                           # merged symbols reused
    ("07", "my_clip_loss"): [("F.cross_entropy(logits.T, labels)", "F.cross_entropy(logits, labels)"),  # one way
                             ("* t.exp()", "* t")],                                         # t is a log
    ("08", "adamw_update"): [("p = p * (1 - lr * weight_decay)", "g = g + weight_decay * p"),  # Adam's coupled L2
                             ("m / (1 - beta1 ** t), v / (1 - beta2 ** t)", "m, v")],      # no bias correction
    ("09", "my_zero_shot_classifier"): [  # averaging the prompts before normalising each: long ones weigh more
        ("emb /= np.linalg.norm(emb, axis=1, keepdims=True)\n    emb = emb.reshape", "emb = emb.reshape")],
    ("10", "image_gradient"): [  # the dot product of the raw embeddings is not the cosine similarity
        ("(F.l2_normalize(i, axis=1) * F.l2_normalize(t, axis=1)).sum()", "(i * t).sum()")],
}


def test_every_notebook_from_01_to_10_has_an_exercise_and_the_course_has_ten():
    numbers = [p.name[:2] for p in WITH_EXERCISES]
    missing = [f"{n:02d}" for n in range(1, 11) if f"{n:02d}" not in numbers]
    assert not missing, f"notebooks without an exercise: {missing}"
    total = sum(len(exercises(read(p))) for p in WITH_EXERCISES)
    assert total >= 10, f"{total} exercises in all; the course promises at least 10"
    assert len(WRONG) >= 5, "keep a classic mistake for at least five exercises"


def _with_source(cell, source):
    cell = copy.deepcopy(cell)
    cell.source, cell.outputs = source, []
    return cell


def _check_fails(client, check, index, message):
    """Run the check cell; it must end in an AssertionError whose message matches `message`."""
    with pytest.raises(nbclient_exceptions.CellExecutionError) as e:
        run(client, _with_source(check, check.source), index)
    got = f"{e.value.ename}: {e.value.evalue}"
    assert re.match(message, got), f"the check failed, but with {got!r}, not {message!r}"


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.name)
def test_each_check_fails_without_the_answer_and_with_a_wrong_one(path, tmp_path, monkeypatch):
    nb = read(path)
    checks = dict(exercises(nb))
    student = student_version(nb)
    tried = set()
    with kernel(nb, tmp_path, monkeypatch) as client:
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            if i in checks:
                j = checks[i]
                assert j is not None, f"{path.name}, cell {i}: an exercise with no check cell after it"
                name = exercise_name(nb.cells[j].source)
                assert name, f"{path.name}, cell {j}: the check cell must wrap its checks in `with exercise(...)`"
                assert cell.source.count(BEGIN) == 1 == cell.source.count(END), \
                    f"{path.name}, cell {i}: one solution region per exercise cell"
                stub = student.cells[i]
                assert "raise NotImplementedError()" in stub.source and BEGIN not in stub.source
                run(client, _with_source(cell, stub.source), i)  # the region sits inside a function body
                _check_fails(client, nb.cells[j], j, rf"AssertionError: {re.escape(name)}: not written yet")
                for right, wrong in WRONG.get((path.name[:2], name), []):
                    assert right in cell.source, f"{path.name}: {right!r} is not in the answer to {name!r}"
                    run(client, _with_source(cell, cell.source.replace(right, wrong)), i)
                    _check_fails(client, nb.cells[j], j, rf"AssertionError: {re.escape(name)}: ")
                    tried.add((path.name[:2], name))
            run(client, cell, i)
    unknown = {key for key in WRONG if key[0] == path.name[:2]} - tried
    assert not unknown, f"WRONG names exercises that {path.name} does not have: {unknown}"


def test_the_student_notebook_stops_at_the_first_exercise(tmp_path, monkeypatch):
    """notebooks/make_student.py's output, run top to bottom, stops at the first check with its sentence;
    no answer and no output is left in it."""
    path = WITH_EXERCISES[0]
    nb = read(path)
    student = student_version(nb)
    first_check = exercises(nb)[0][1]
    assert not any(c.get("outputs") for c in student.cells if c.cell_type == "code")
    for (i, _), cell in zip(exercises(nb), [student.cells[i] for i, _ in exercises(nb)]):
        answer = nb.cells[i].source.split(BEGIN)[1].split(END)[0].strip()
        assert answer not in cell.source
    with kernel(student, tmp_path, monkeypatch) as client:
        stopped = None
        for i, cell in enumerate(student.cells):
            if cell.cell_type != "code":
                continue
            try:
                run(client, cell, i)
            except nbclient_exceptions.CellExecutionError as e:
                stopped = (i, f"{e.ename}: {e.evalue}")
                break
    assert stopped and stopped[0] == first_check, f"expected a stop at cell {first_check}, got {stopped}"
    assert re.match(r"AssertionError: .*: not written yet", stopped[1]), stopped[1]


def test_make_student_writes_the_stripped_notebooks(tmp_path, capsys):
    import make_student
    make_student.main(["01", "02", "-o", str(tmp_path)])
    written = sorted(p.name for p in tmp_path.glob("*.ipynb"))
    assert written == sorted(p.name for p in WITH_EXERCISES if p.name[:2] in ("01", "02"))
    for name in written:
        assert BEGIN not in (tmp_path / name).read_text()
    assert re.search(r"01_\w+\.ipynb: 2 exercise\(s\)", capsys.readouterr().out)
    with pytest.raises(SystemExit, match="no notebook"):
        make_student.main(["99", "-o", str(tmp_path)])
