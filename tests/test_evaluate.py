"""Evaluation metrics on constructed embeddings with known answers, and the plumbing of
zero-shot evaluation through a small fake model (the real CLIP lives in minclip.model)."""
import numpy as np
import pytest

import minclip
from minclip import backend, nn
from minclip import evaluate as E
from minclip.autograd import Config, Tensor
from minclip.cli import format_table


# ----------------------------------------------------------------------------- a fake CLIP
class FakeCLIP(nn.Module):
    """encode_image: per-channel image mean (3,) through an identity matrix.
    encode_text: row tokens[:, 0] - 1 of a fixed table (one text per table row).
    Records what it saw: the training flag, the backprop flag and token shapes."""
    context_length = 8

    def __init__(self, table):
        self.proj = nn.Parameter(backend.asarray(np.eye(3, dtype=np.float32)))  # on the backend, as a model's
        self.table = nn.Parameter(backend.asarray(np.asarray(table, np.float32)))
        self.seen = []

    def encode_image(self, images):
        self.seen.append(("image", self.training, Config.enable_backprop))
        return Tensor(images.mean(axis=(2, 3))) @ self.proj                  # (N, 3)

    def encode_text(self, tokens):
        self.seen.append(("text", self.training, Config.enable_backprop, tokens.shape))
        return self.table[tokens[:, 0] - 1] * 1.0                            # (N, D)


def colour_images(labels, size=4):
    """Images whose channel `label` is bright: class c is 'colour c'."""
    imgs = np.full((len(labels), 3, size, size), 0.1, np.float32)
    imgs[np.arange(len(labels)), labels] = 1.0
    return imgs


def make_loader(labels, batch_size=3):
    labels = np.asarray(labels, np.int64)
    imgs = colour_images(labels)
    return [(imgs[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(labels), batch_size)]


def table_tokenize(texts):
    """Token 1 + index of the text in TEXTS, then EOT-like 9 and padding zeros."""
    out = np.zeros((len(texts), FakeCLIP.context_length), np.int64)
    for i, t in enumerate(texts):
        out[i, :2] = TEXTS.index(t) + 1, 9
    return out


CLASSES = ["red", "green", "blue"]
TEMPLATES = ["a {} thing", "the {} one"]
TEXTS = [t.format(c) for c in CLASSES for t in TEMPLATES]
rng = np.random.default_rng(0)
TABLE = np.repeat(np.eye(3), 2, axis=0) + 0.3 * rng.standard_normal((6, 3))   # text k ~ class k // 2


# ----------------------------------------------------------------------------- helpers
def test_trim_tokens_keeps_eot_column():
    tokens = np.array([[5, 7, 9, 0, 0, 0], [5, 9, 0, 0, 0, 0]])
    out = E.trim_tokens(tokens)
    assert out.shape == (2, 3) and (out[:, 2] == [9, 0]).all()
    assert E.trim_tokens(np.zeros((2, 4), np.int64)).shape == (2, 1)   # never empty
    assert E.trim_tokens(np.ones((2, 4), np.int64)).shape == (2, 4)


def test_accuracy_known_top1_half_top5_one():
    logits = np.array([[9, 1, 2, 3, 4, 5], [1, 9, 2, 3, 4, 5],            # correct at top 1
                       [9, 8, 7, 6, 5, 4], [1, 2, 9, 3, 4, 0.0]])         # label ranked 5th / 2nd
    labels = np.array([0, 1, 4, 4])
    acc = E.accuracy(logits, labels, topk=(1, 2, 5))
    assert acc == {"top1": 0.5, "top2": 0.75, "top5": 1.0}


def test_accuracy_topk_capped_at_number_of_classes():
    acc = E.accuracy(np.array([[0.0, 1, 2], [2, 1, 0]]), np.array([0, 1]), topk=(1, 5))
    assert acc["top1"] == 0.0 and acc["top5"] == 1.0


def test_zero_shot_scores_confusion_and_scale_free():
    clf = np.eye(3, dtype=np.float32)                       # (D, C)
    feats = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0.1], [0, 0, 5]], np.float32)
    labels = np.array([0, 0, 1, 2, 2])
    res = E.zero_shot_scores(feats, labels, clf)
    assert res["preds"].tolist() == [0, 1, 1, 0, 2]
    assert res["top1"] == pytest.approx(3 / 5) and res["top5"] == 1.0 and res["n"] == 5
    expected = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    np.testing.assert_array_equal(res["confusion"], expected)
    assert E.zero_shot_scores(feats * 7, labels, clf)["top1"] == res["top1"]   # feature scale is irrelevant


# ----------------------------------------------------------------------------- zero-shot plumbing
def test_zero_shot_classifier_prompt_ensembling_by_hand():
    model = FakeCLIP(TABLE)
    clf = E.zero_shot_classifier(model, CLASSES, TEMPLATES, tokenize_fn=table_tokenize)
    assert clf.shape == (3, 3) and clf.dtype == np.float32
    for c in range(3):
        a, b = TABLE[2 * c], TABLE[2 * c + 1]
        mean = (a / np.linalg.norm(a) + b / np.linalg.norm(b)) / 2
        np.testing.assert_allclose(clf[:, c], mean / np.linalg.norm(mean), rtol=1e-5)
    assert all(s[3] == (6, 2) for s in model.seen)   # padding trimmed, EOT column kept


def test_zero_shot_eval_plumbing_mode_restored_no_graph():
    model = FakeCLIP(TABLE)
    assert model.training
    clf = E.zero_shot_classifier(model, CLASSES, TEMPLATES, tokenize_fn=table_tokenize)
    labels = [0, 1, 2, 2, 1, 0, 0]
    res = E.zero_shot_eval(model, make_loader(labels), clf, progress=False)
    assert res["top1"] == 1.0 and res["n"] == 7
    np.testing.assert_array_equal(res["labels"], labels)
    np.testing.assert_array_equal(res["confusion"], np.diag([3, 2, 2]))
    assert model.training                                      # mode restored
    assert all(s[1] is False and s[2] is False for s in model.seen)   # eval mode, no graph recorded
    model.eval()
    E.encode_dataset(model, make_loader(labels), progress=False)
    assert not model.training


def test_encode_dataset_shapes_and_what():
    model = FakeCLIP(TABLE)
    labels = np.array([0, 2, 1, 1])
    feats, got = E.encode_dataset(model, make_loader(labels), "image", progress=False)
    assert feats.shape == (4, 3) and feats.dtype == np.float32 and got.dtype == np.int64
    np.testing.assert_array_equal(got, labels)
    tokens = table_tokenize(TEXTS[:4])
    pairs = [(colour_images(labels[:2]), tokens[:2]), (colour_images(labels[2:]), tokens[2:])]
    img, txt = E.encode_dataset(model, pairs, "both", progress=False)
    assert img.shape == (4, 3) and txt.shape == (4, 3)
    np.testing.assert_allclose(txt, TABLE[:4], rtol=1e-6)
    txt2, toks = E.encode_dataset(model, pairs, "text", progress=False)
    np.testing.assert_allclose(txt2, txt)
    np.testing.assert_array_equal(toks, tokens)
    with pytest.raises(ValueError, match="what must be"):
        E.encode_dataset(model, pairs, "audio")


# ----------------------------------------------------------------------------- retrieval
def test_retrieval_identity_is_perfect():
    x = np.random.default_rng(1).standard_normal((12, 5))
    res = E.retrieval_metrics(x, 3 * x)
    assert all(v == 1.0 for v in res.values())
    assert set(res) == {f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)} | {"mean_recall"}


def test_retrieval_known_ranks():
    # sim[i, j] = v[(j - i) mod N] with v decreasing: the caption of image i at j has rank (j - i) mod N in
    # both its row and its column. Images are one-hot, so text j's features are column j.
    n = 10
    v = np.linspace(1.0, 0.1, n)
    sim = np.array([[v[(j - i) % n] for j in range(n)] for i in range(n)])
    t2i = np.array([0, 1, 2, 3, 4, 6, 7, 8, 9, 5])     # ranks 0,0,0,0,0,9,9,9,9,4
    res = E.retrieval_metrics(np.eye(n), sim.T, ks=(1, 5, 10), text_to_image=t2i)
    for d in ("image_to_text", "text_to_image"):
        assert res[f"{d}_R@1"] == 0.5 and res[f"{d}_R@5"] == 0.6 and res[f"{d}_R@10"] == 1.0
    assert res["mean_recall"] == pytest.approx(0.7)


def test_retrieval_several_captions_per_image():
    img = np.array([[1.0, 0], [0, 1]])
    txt = np.array([[0, 1], [0.9, 0.1], [0.1, 0.9], [1, 0]])   # captions 0, 1 of image 0; 2, 3 of image 1
    res = E.retrieval_metrics(img, txt, ks=(1, 2), text_to_image=[0, 0, 1, 1])
    assert res["image_to_text_R@1"] == 0.0 and res["image_to_text_R@2"] == 1.0
    assert res["text_to_image_R@1"] == 0.5 and res["text_to_image_R@2"] == 1.0


def test_retrieval_collapsed_features_are_not_perfect():
    res = E.retrieval_metrics(np.ones((10, 4)), np.ones((10, 4)), ks=(1,))
    assert res["image_to_text_R@1"] == 0.1 and res["text_to_image_R@1"] == 0.1


def test_retrieval_errors_name_the_problem():
    with pytest.raises(ValueError, match="text_to_image"):
        E.retrieval_metrics(np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="no caption"):
        E.retrieval_metrics(np.eye(3), np.eye(3), text_to_image=[0, 0, 1])


# ----------------------------------------------------------------------------- linear probe
def blobs(n, seed, n_classes=4, dim=16):
    r = np.random.default_rng(seed)
    centres = np.random.default_rng(123).standard_normal((n_classes, dim)) * 3
    y = r.integers(0, n_classes, n)
    return (centres[y] + r.standard_normal((n, dim))).astype(np.float32), y


def test_linear_probe_separable_blobs_and_deterministic():
    (tx, ty), (vx, vy), (sx, sy) = blobs(300, 1), blobs(100, 2), blobs(200, 3)
    grid = (1e-3, 1e-1, 10.0)
    res = E.linear_probe(tx, ty, vx, vy, sx, sy, weight_decays=grid, epochs=150)
    assert res["test_acc"] >= 0.98 and res["val_acc"] >= 0.98
    assert res["best_weight_decay"] in grid
    assert [wd for wd, _ in res["history"]] == list(grid)
    assert res == E.linear_probe(tx, ty, vx, vy, sx, sy, weight_decays=grid, epochs=150)
    with minclip.no_grad():   # still trains inside no_grad
        assert E.linear_probe(tx, ty, vx, vy, weight_decays=(1e-3,), epochs=50)["val_acc"] >= 0.98


def test_linear_probe_picks_weight_decay_by_validation():
    # a huge weight decay shrinks W to ~0, a near-constant predictor: validation must reject it
    tx, ty = blobs(40, 5, dim=16)
    vx, vy = blobs(200, 6, dim=16)
    res = E.linear_probe(tx, ty, vx, vy, weight_decays=(1e-3, 1e3), epochs=150)
    assert res["best_weight_decay"] == 1e-3 and res["test_acc"] is None
    assert res["history"][0][1] > res["history"][1][1]


# ----------------------------------------------------------------------------- printing
def test_format_table():
    text = format_table({"top1": 0.5, "n": 10, "model": "tiny"})
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "value"] and "0.5000" in text and "tiny" in text
    rows = [{"model": "a", "top1": 0.25}, {"model": "bb", "top1": 1.0, "top5": 1.0}]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["model", "top1", "top5"] and len(lines) == 4
    assert len({len(l) for l in lines[1:]}) <= 2 and lines[2].split() == ["a", "0.2500"]
    assert format_table([]) == ""


def test_progress_bar_only_on_a_terminal(monkeypatch):
    items = [1, 2]
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert E._progress(items, True, "x") is items
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert E._progress(items, False, "x") is items
    bar = E._progress(items, True, "x")
    assert bar is not items and list(bar) == items


def test_k_shot_indices_take_k_of_each_class_once():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 2, 2])
    idx = E.k_shot_indices(labels, 3, seed=1)
    assert len(idx) == 9 and len(set(idx.tolist())) == 9
    assert np.bincount(labels[idx]).tolist() == [3, 3, 3]
    np.testing.assert_array_equal(idx, E.k_shot_indices(labels, 3, seed=1))     # seeded
    draws = [np.sort(E.k_shot_indices(labels, 2, seed=s)) for s in (1, 2)]
    assert not np.array_equal(*draws)
    with pytest.raises(ValueError, match="class 1 has 3 examples, fewer than k=4"):
        E.k_shot_indices(labels, 4)
