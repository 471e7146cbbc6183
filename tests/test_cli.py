"""The `minclip` command line: smoke tests with tiny settings and one-line errors for bad input."""
import json
import subprocess
import sys

import pytest
from PIL import Image

from minclip.cli import main

TINY = ["--train-size", "32", "--eval-size", "16", "--epochs", "1", "--batch-size", "16", "--warmup", "1",
        "--workers", "1", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny training run shared by the tests below: (run folder, checkpoint path)."""
    logs = tmp_path_factory.mktemp("logs")
    assert main(["train", *TINY, "--logs", str(logs), "--name", "cli"]) == 0
    return logs / "cli", str(logs / "cli" / "checkpoints" / "latest.npz")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from minclip.data import Shapes
    root = tmp_path_factory.mktemp("images")
    shapes = Shapes("val", length=6, image_size=32)
    for i in range(6):
        cls = shapes.info(i)["shape"]
        (root / cls).mkdir(exist_ok=True)
        shapes.render(i).save(root / cls / f"{i}.png")
    return root


def test_train_prints_zero_shot_accuracy_and_plots(run, capsys):
    run_dir, ckpt = run
    for f in ("curves.png", "similarity.png", "confusion.png", "metrics.jsonl"):
        assert (run_dir / f).exists()
    assert main(["plot", str(run_dir)]) == 0
    assert "curves.png" in capsys.readouterr().out


def test_eval_zeroshot_shapes_writes_json(run, tmp_path, capsys):
    out = tmp_path / "zs.json"
    assert main(["eval", "zeroshot", "--checkpoint", run[1], "--dataset", "shapes", "--size", "16",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res) >= {"zeroshot/shape_top1", "zeroshot/colour_top1", "zeroshot/pair_heldout_top1"}
    assert "shape_top1" in capsys.readouterr().out


def test_eval_zeroshot_on_image_folder_and_linear_probe(run, image_folder, capsys):
    assert main(["eval", "zeroshot", "--checkpoint", run[1], "--data", str(image_folder)]) == 0
    assert "top1" in capsys.readouterr().out
    assert main(["eval", "linear-probe", "--checkpoint", run[1], "--dataset", "shapes", "--key", "colour",
                 "--size", "40"]) == 0
    assert "test_acc" in capsys.readouterr().out


def test_eval_retrieval_on_csv(run, image_folder, tmp_path, capsys):
    rows = ["filepath\ttitle"] + [f"{p}\ta {p.parent.name}" for p in sorted(image_folder.rglob("*.png"))]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    assert main(["eval", "retrieval", "--checkpoint", run[1], "--data", str(tmp_path / "pairs.csv")]) == 0
    assert "image_to_text_R@1" in capsys.readouterr().out


def test_classify_and_search(run, image_folder, tmp_path, capsys):
    img = sorted(image_folder.rglob("*.png"))[0]
    assert main(["classify", "--checkpoint", run[1], str(img), "--labels", "a red circle,a blue square"]) == 0
    assert "%" in capsys.readouterr().out
    out = tmp_path / "top.png"
    assert main(["search", "--checkpoint", run[1], "--images", str(image_folder), "a red circle", "-k", "3",
                 "--out", str(out)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()[:2].rstrip(".").isdigit()]
    assert len(lines) == 3 and Image.open(out).size[0] > 0
    assert (image_folder / ".minclip-index" / "embeddings.npy").exists()  # later searches reuse the embeddings
    assert main(["index", "build", str(image_folder), "--checkpoint", run[1], "--no-progress"]) == 0
    assert "indexed 6 images" in (text := capsys.readouterr().out) and "(0 encoded now, 6 unchanged)" in text
    assert main(["search", "--checkpoint", run[1], "--images", str(image_folder), "a circle", "-k", "2",
                 "--out", str(out)]) == 0


def test_classify_names_an_unreadable_image(run, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main(["classify", "--checkpoint", run[1], str(tmp_path / "bad.png"), "--labels", "a,b"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("minclip: error: cannot read image") and "bad.png" in err and "\n" not in err


@pytest.mark.parametrize("argv, message", [
    (["eval", "zeroshot", "--checkpoint", "/nonexistent/c.npz"], "checkpoint not found"),
    (["train", *TINY, "--model", "no-such-model"], "unknown model config"),
    (["train", *TINY, "--batch-size", "1"], "identically zero"),
    (["train", *TINY, "--dataset", "csv"], "--train-data"),
])
def test_bad_input_exits_nonzero_with_one_line_error(argv, message, tmp_path, capsys):
    assert main(argv + (["--logs", str(tmp_path)] if argv[0] == "train" else [])) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_bad_csv_column_and_missing_image(run, tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("path\tcaption\nx.png\ta cat\n")
    assert main(["eval", "retrieval", "--checkpoint", run[1], "--data", str(tmp_path / "bad.csv")]) == 1
    err = capsys.readouterr().err
    assert "filepath" in err and len(err.strip().splitlines()) == 1
    assert main(["classify", "--checkpoint", run[1], str(tmp_path / "nope.png"), "--labels", "a,b"]) == 1
    assert "image not found" in capsys.readouterr().err


def test_console_entry_point_version():
    out = subprocess.run([sys.executable, "-m", "minclip.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("minclip ")


def test_info_reports_backend(capsys):
    assert main(["info"]) == 0
    assert "backend" in capsys.readouterr().out
