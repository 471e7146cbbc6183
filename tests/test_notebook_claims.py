"""A sentence about an output is a claim: every percentage, duration and count that a notebook's text
states must be printed or asserted by one of its code cells.

The check is a heuristic that exists to make the author look: it finds numbers with a unit in the markdown
cells (outside math, code and "quoted" text from the paper) and looks for the same number, to the
precision written, among the numbers of the code cells' sources and committed outputs. A fraction printed
as 0.922 supports "92 %" and "92.2 %". Write "(printed above)" rather than copying a number into prose.
"""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

COUNT_NOUNS = ("parameters", "parameter", "images", "image", "steps", "pairs", "tokens", "token", "patches",
               "patch", "merges", "epochs", "epoch", "Functions", "functions", "nodes", "classes", "ids",
               "captions", "positions", "prompts", "templates", "directions", "elements", "arrays", "columns",
               "rows", "layers", "heads", "times", "words", "cells", "exercises", "notebooks", "tensors",
               "labels", "examples", "numbers", "pixels", "channels", "bytes", "MB", "GB", "GFLOP")
UNITS = r"%|ms\b|s\b|sec\b|seconds?\b|min\b|minutes?\b|hours?\b|[x×](?![\d\w])|M(?:-| )?param\w*|" + \
        r"(?:" + "|".join(COUNT_NOUNS) + r")\b"
CLAIM = re.compile(r"(?<![\w.,/-])(\d[\d,]*(?:\.\d+)?)\s*(" + UNITS + ")")
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")
HIDDEN = [r"```.*?```", r"\$\$.*?\$\$", r"\$[^$]*\$", r"`[^`]*`", r"\"[^\"]*\"", r"“[^”]*”",
          r"\]\([^)]*\)", r"<[^>]+>"]   # code, math, quotes from the paper, link targets, html


def prose(text):
    """Markdown without the parts that are not claims about outputs."""
    for pattern in HIDDEN:
        text = re.sub(pattern, " ", text, flags=re.S)
    return text


def claims(nb):
    """(number as written, its unit, the sentence around it) of every number with a unit in the markdown."""
    found = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            text = prose(cell.source)
            for m in CLAIM.finditer(text):
                found.append((m.group(1), m.group(2), " ".join(text[max(0, m.start() - 60):m.end() + 20].split())))
    return found


def evidence(nb):
    """Every number in the code cells' sources and in their committed text outputs."""
    texts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        texts.append(cell.source)
        for out in cell.get("outputs", []):
            texts.append(out.get("text", "") if out.output_type == "stream"
                         else out.get("data", {}).get("text/plain", ""))
    return {(float(m.group(0).replace(",", "")), "." in m.group(0)) for m in NUMBER.finditer("\n".join(texts))}


def supported(written, unit, numbers):
    """Is the number `written` (e.g. "92.2", "1,024") with its unit among `numbers` (value, has a decimal
    point)? Counts must be there exactly; a percentage or a duration may be printed more precisely (92.2 for
    "92") or, for a percentage, as a fraction (0.922)."""
    value = float(written.replace(",", ""))
    if unit not in ("%",) and not re.match(r"ms|s|sec|min|hour|[x×]", unit):
        return any(y == value for y, _ in numbers)
    places = len(written.split(".")[1]) if "." in written else 0
    return any(round(y, places) == value or unit == "%" and dotted and y <= 1 and round(100 * y, places) == value
               for y, dotted in numbers)


def unsupported(nb):
    numbers = evidence(nb)
    return [f"{n!r} in: ...{where}..." for n, unit, where in claims(nb) if not supported(n, unit, numbers)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_number_in_the_text_is_printed_or_asserted(path):
    nb = nbformat.read(path, as_version=4)
    missing = unsupported(nb)
    assert not missing, (f"{path.name}: the text states numbers that no code cell prints or asserts (print "
                         "them, assert them, or write '(printed above)'):\n  " + "\n  ".join(missing))


def test_the_claims_check_can_fail():
    """The heuristic itself: an unprinted percentage, duration and count are found; printed ones, fractions
    printed as 0.922, math, code and quotes are not."""
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("Training takes about two minutes and 44 s; the graph holds 100 Functions; "
                                      "shape accuracy is 92 % and colour 99.6 %. $n = 50$ steps, `12 steps`, "
                                      "\"400 million (image, text) pairs\", 8 patches."),
        nbformat.v4.new_code_cell("print(acc)", outputs=[nbformat.v4.new_output(
            "stream", name="stdout", text="shape 0.922 colour 99.6% patches 8\n")]),
    ])
    assert [n for n, _, _ in claims(nb)] == ["44", "100", "92", "99.6", "8"]
    assert [m.split()[0] for m in unsupported(nb)] == ["'44'", "'100'"]
