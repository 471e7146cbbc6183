"""A CSV and an image folder as people export them, met through the command line: a BOM, CRLF line ends,
mixed image modes (16-bit grayscale among them), emoji and CJK captions, bad rows, relative paths, a
header with no rows, a missing and a corrupt image, an empty and a very long caption; a search index and
a run folder inside an image folder. Each problem is said once, in one line, where the user sees it."""
import re

import numpy as np
import pytest
from PIL import Image

from minclip import data
from minclip.cli import main

QUICK = ["--warmup", "1", "--workers", "0", "--batch-size", "2", "--epochs", "1", "--cache-gb", "0"]


def write_csv(path, rows, newline="\n", bom=False):
    path.write_bytes(("\ufeff" if bom else "").encode() + newline.join(rows).encode() + newline.encode())
    return path


def image(path, mode="RGB", size=(24, 20), value=None):
    rng = np.random.default_rng(len(str(path)))
    if mode == "I;16":
        arr = np.full(size[::-1], 32768 if value is None else value, np.uint16)
        Image.fromarray(arr).save(path)  # uint16 -> mode "I;16"
    else:
        Image.fromarray(rng.integers(0, 255, size[::-1] + (3,), dtype=np.uint8)).convert(mode).save(path)
    return path


@pytest.fixture
def messy(tmp_path):
    """A folder with images in five modes, a CSV with a BOM and CRLF, captions in other scripts, one row
    whose image is missing, one corrupt image, one empty caption and one very long caption."""
    (tmp_path / "imgs").mkdir()
    rows = ["filepath\ttitle"]
    for i, mode in enumerate(["RGB", "RGBA", "L", "P", "I;16", "RGB", "RGB", "RGB"]):
        image(tmp_path / "imgs" / f"{i}.png", mode)
        rows.append(f"imgs/{i}.png\t{['a red thing 🍎', '赤いもの', 'a dog', 'ein Hund', 'a grey square'][i % 5]}")
    (tmp_path / "imgs" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    rows += ["imgs/corrupt.png\ta broken file", "imgs/missing.png\tnot there", "imgs/0.png\t   ",
             "imgs/1.png\t" + "a very long caption that goes on " * 20]
    return write_csv(tmp_path / "pairs.csv", rows, newline="\r\n", bom=True)


def test_a_messy_csv_trains_and_says_each_problem_once(messy, tmp_path, capsys):
    assert main(["train", "--dataset", "csv", "--train-data", str(messy), "--logs", str(tmp_path / "logs"),
                 "--context-length", "12", *QUICK, "--epochs", "2"]) == 0    # a batch left with one pair is skipped
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "minclip: warning:" in line]
    assert sum("missing.png" in line for line in warnings) == 1, warnings          # once, not once per epoch
    assert any(re.search(r"1 of the 12 rows .* have an empty caption and are left out \(first: line 12\)", line)
               for line in warnings), warnings
    long = [line for line in warnings if "are cut at the end" in line]
    assert long and "..." in long[0] and len(long[0]) < 300, long                  # the caption quoted short
    skipped = [line for line in warnings if "unreadable" in line]
    assert [line.split("in epoch ")[1][:2] for line in skipped] == ["1,", "2,"], warnings   # counted from 1
    assert all("corrupt.png" in line for line in skipped), warnings
    assert all(line.startswith("minclip: warning:") for line in warnings), "a warning inside another line"


def test_a_csv_with_a_header_and_no_rows_is_one_line(tmp_path, capsys):
    csv = write_csv(tmp_path / "empty.csv", ["filepath\ttitle", "", "\t"], newline="\r\n")
    assert main(["train", "--dataset", "csv", "--train-data", str(csv), "--logs", str(tmp_path / "logs"),
                 *QUICK]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"minclip: error: CsvImageText: {csv} has a header (2 columns) but no rows"]


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    """A mid-grey 16-bit PNG (32768 of 65535) must come out mid-grey (128), not white (PIL clips at 255)."""
    path = image(tmp_path / "grey16.png", "I;16")
    write_csv(tmp_path / "p.csv", ["filepath\ttitle", "grey16.png\ta grey picture"])
    x, _ = data.CsvImageText(str(tmp_path / "p.csv"), image_size=16)[0]
    assert abs(int(data.denormalize(x).mean()) - 128) <= 1, data.denormalize(x).mean()
    (tmp_path / "cls" / "grey").mkdir(parents=True)
    path.rename(tmp_path / "cls" / "grey" / "g.png")
    x, _ = data.ImageFolder(str(tmp_path / "cls"), image_size=16)[0]
    assert abs(int(data.denormalize(x).mean()) - 128) <= 1


def test_an_index_and_a_run_folder_are_never_classes(tmp_path, capsys):
    """`minclip index build` writes .minclip-index/ inside the folder, and a run folder (logs/RUN with
    metrics.jsonl and curves.png) may sit there too: zero-shot evaluation must see only the two classes."""
    root = tmp_path / "photos"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            image(root / cls / f"{i}.png")
    assert main(["index", "build", str(root), "--checkpoint", "tiny-vit-shapes", "--no-progress"]) == 0
    assert (root / ".minclip-index").is_dir()
    run = root / "logs" / "run1"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    image(run / "curves.png")
    (root / ".hidden").mkdir()
    image(root / ".hidden" / "x.png")
    capsys.readouterr()
    assert main(["eval", "zeroshot", "--checkpoint", "tiny-vit-shapes", "--data", str(root),
                 "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"classes\s+2\b", out) and re.search(r"\bn\s+4\b", out), out
    assert data.ImageFolder(str(root)).classes == ["cat", "dog"]
