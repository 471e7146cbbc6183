"""Training on a person's own captioned images through the CSV path, as a new user would: the tokenizer
is learnt on the run's captions and travels in the checkpoint, the context length comes from the data,
class names are matched by name, and unreadable data stops with one line."""
import glob
import json
import os
import re
import warnings

import numpy as np
import pytest
from digits_data import CLASSES, make_digits
from PIL import Image

import minclip
from minclip.checkpoint import read_checkpoint, save_checkpoint
from minclip.cli import main
from minclip.evaluate import match_classnames
from minclip.tokenizer import get_tokenizer
from minclip.train import TrainConfig, train

QUICK = ["--warmup", "2", "--workers", "1", "--no-progress"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return make_digits(str(tmp_path_factory.mktemp("digits")), n_train=1000, n_test=100)


@pytest.fixture(scope="module")
def learnt(digits, tmp_path_factory):
    """A short run on the digits (105 steps of 128 pairs instead of the default 1,050) with every other
    default a new user gets: the tokenizer, the context length, the learning rate. Without the default
    crops, which pay off over many epochs, not over 15 (tests/benchmarks/bench_small_data.py measures those)."""
    logs = tmp_path_factory.mktemp("logs")
    assert main(["train", "--dataset", "csv", "--train-data", digits[0], "--epochs", "15", "--crop-scale", "1",
                 "--logs", str(logs), "--name", "digits", "--no-progress"]) == 0
    return str(logs / "digits" / "checkpoints" / "latest.npz")


@pytest.mark.slow
def test_own_captions_learn_words_that_shapes_never_uses(digits, learnt, tmp_path, capsys):
    model = minclip.load(learnt)[0]
    tok = model.tokenizer
    # merges learnt on these captions: the class words and "handwritten" are single tokens, and the
    # context covers the longest caption, so no class word at the end of a long caption is cut off
    assert all(len(tok.encode(w)) == 1 for w in CLASSES + ["handwritten"])
    longest = max(len(tok.encode(c.split("\t")[1])) + 2 for c in open(digits[0]).read().splitlines()[1:])
    assert tok.trained_length == longest
    assert len(get_tokenizer("shapes").encode("handwritten")) > 1  # what the old default gave

    # class names typed in natural order, folders sorted alphabetically: matched by name
    out = tmp_path / "zs.json"
    assert main(["eval", "zeroshot", "--checkpoint", learnt, "--data", digits[1], "--classnames", ",".join(CLASSES),
                 "--templates", "a scan of a handwritten {}", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["top1"] >= 0.4, res  # chance is 0.1
    assert set(res["per_class_top1"]) == set(CLASSES)
    assert "matched by name" in capsys.readouterr().out

    # the same checkpoint classifies and searches with no tokenizer argument
    sevens = sorted(glob.glob(os.path.join(digits[1], "seven", "*.png")))[:2]
    labels = ",".join(f"a scan of a handwritten {c}" for c in CLASSES)
    assert main(["classify", "--checkpoint", learnt, *sevens, "--labels", labels]) == 0
    assert ": a scan of a handwritten" in capsys.readouterr().out
    assert main(["search", "--checkpoint", learnt, "--images", digits[1], "a scan of a handwritten seven",
                 "-k", "5", "--out", str(tmp_path / "s.png")]) == 0
    hits = [line for line in capsys.readouterr().out.splitlines() if line.strip()[:2].strip(".").isdigit()]
    assert sum("/seven/" in h for h in hits[:5]) >= 2, hits


# ----------------------------------------------------------------------------- a tiny CSV run for the checks below
@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    rows = ["filepath\ttitle"]
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"{i}.png")
        rows.append(f"{i}.png\tan unremarkable picture of noise number {i}")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root


def _train(root, name, **kw):
    cfg = dict(dataset="csv", train_data=str(root / "pairs.csv"), epochs=1, batch_size=8, warmup=1, workers=0,
               logs=str(root / "logs"), name=name, progress=False)
    return train(TrainConfig(**{**cfg, **kw}))


def test_truncated_captions_are_reported_once_with_an_example(small_csv):
    with pytest.warns(UserWarning, match=r"16 of 16 training captions are longer than 6 tokens .*noise number"):
        res = _train(small_csv, "cut", context_length=6)
    assert read_checkpoint(res["checkpoint"])[1]["tokenizer"].trained_length == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the measured context cuts nothing, so nothing is reported
        res = _train(small_csv, "whole")
    assert read_checkpoint(res["checkpoint"])[1]["tokenizer"].trained_length == 10  # 6 words, 2 digits, SOT, EOT


def test_checkpoint_carries_its_tokenizer_and_old_ones_load_with_a_note(small_csv, tmp_path):
    res = _train(small_csv, "tok")
    tok = minclip.load(res["checkpoint"])[0].tokenizer
    assert tok.encode("unremarkable") == [tok.encoder["unremarkable</w>"]]
    assert (small_csv / "logs" / "tok" / "bpe.txt.gz").exists()
    # resume keeps the run's tokenizer; --pretrained brings it along
    again = _train(small_csv, "tok", epochs=2, resume=res["checkpoint"])
    assert minclip.load(again["checkpoint"])[0].tokenizer.merges == tok.merges
    # a checkpoint written before tokenizers were stored: loads, saying which merges are assumed
    weights, state = read_checkpoint(res["checkpoint"])
    del state["tokenizer"]
    save_checkpoint(str(tmp_path / "old.npz"), weights, **state)
    with pytest.warns(UserWarning, match="carries no tokenizer.*bpe_shapes"):
        old_tok = minclip.load(str(tmp_path / "old.npz"))[0].tokenizer
    assert old_tok.merges == get_tokenizer("shapes").merges


def test_prompts_longer_than_the_trained_captions_warn(small_csv, capsys):
    res = _train(small_csv, "long")
    capsys.readouterr()
    assert main(["classify", "--checkpoint", res["checkpoint"], str(small_csv / "0.png"),
                 "--labels", "noise," + "a very long label " * 4]) == 0
    assert re.search(r"(^|\n)minclip: warning: 1 prompt\(s\) are longer than the 10 tokens the model was trained "
                     r"on, e.g. 'a very long label", capsys.readouterr().err)


def test_all_images_missing_is_one_line(small_csv, tmp_path, capsys):
    (tmp_path / "gone.csv").write_text("filepath\ttitle\nnope1.png\ta cat\nnope2.png\ta dog\n")
    assert main(["train", "--dataset", "csv", "--train-data", str(tmp_path / "gone.csv"), "--logs",
                 str(tmp_path / "logs"), *QUICK]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "none of the 2 images listed in" in err and "nope1.png" in err


def test_all_images_unreadable_is_one_line(tmp_path, capsys):
    rows = ["filepath\ttitle"]
    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(b"not a png")
        rows.append(f"{i}.png\tbroken {i}")
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    assert main(["train", "--dataset", "csv", "--train-data", str(tmp_path / "bad.csv"), "--batch-size", "2",
                 "--epochs", "1", "--logs", str(tmp_path / "logs"), *QUICK]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("minclip: error")]
    assert err == ["minclip: error: no training batch could be built in epoch 1: 4 of 4 images could not be read "
                   "(see the warning above)"]


# ----------------------------------------------------------------------------- class names
def test_class_names_matched_by_name_number_or_order():
    folders = sorted(CLASSES)  # eight, five, four, nine, one, seven, six, three, two, zero
    names, how = match_classnames(folders, CLASSES)
    assert how == "name" and names == folders
    names, how = match_classnames(folders, [c.upper() for c in CLASSES])  # case does not matter
    assert how == "name" and names[0] == "EIGHT"
    folders = sorted(str(k) for k in range(12))  # 0, 1, 10, 11, 2, ...: ImageFolder sorts as text
    names, how = match_classnames(folders, [f"c{k}" for k in range(12)])
    assert how == "number" and names[:5] == ["c0", "c1", "c10", "c11", "c2"]
    names, how = match_classnames(["cat", "dog"], ["kitten", "puppy"])
    assert how == "order" and names == ["kitten", "puppy"]
    with pytest.raises(ValueError, match="3 class names for 2 class folders"):
        match_classnames(["cat", "dog"], ["a", "b", "c"])


def test_wrong_class_name_count_is_one_line_and_mapping_is_printed(small_csv, tmp_path, capsys):
    res = _train(small_csv, "cls")
    for name in ("cat", "dog"):
        (tmp_path / "f" / name).mkdir(parents=True)
        Image.open(small_csv / "0.png").save(tmp_path / "f" / name / "0.png")
    assert main(["eval", "zeroshot", "--checkpoint", res["checkpoint"], "--data", str(tmp_path / "f"),
                 "--classnames", "a,b,c"]) == 1
    assert capsys.readouterr().err.strip().endswith("3 class names for 2 class folders (cat, dog); give one name "
                                                    "per folder")
    assert main(["eval", "zeroshot", "--checkpoint", res["checkpoint"], "--data", str(tmp_path / "f"),
                 "--classnames", "kitten,puppy"]) == 0
    out = capsys.readouterr().out
    assert "sorted-folder order" in out and "cat -> kitten" in out and "dog -> puppy" in out


def test_csv_defaults_crop_the_images_and_aim_at_a_pair_budget(small_csv, monkeypatch):
    import minclip.train as train_module
    monkeypatch.setattr(train_module, "CSV_PAIRS_PER_RUN", 48)  # 16 images: 3 epochs
    _train(small_csv, "defaults", epochs=0)
    cfg = json.loads((small_csv / "logs" / "defaults" / "config.json").read_text())
    assert cfg["crop_scale"] == train_module.CSV_CROP_SCALE == 0.5 and cfg["epochs"] == 3
    _train(small_csv, "uncropped", crop_scale=1.0)
    assert json.loads((small_csv / "logs" / "uncropped" / "config.json").read_text())["crop_scale"] == 1.0
    with pytest.raises(ValueError, match="--crop-scale 1.5"):
        _train(small_csv, "bad", crop_scale=1.5)
