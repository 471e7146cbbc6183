"""Every plot writes a PNG that PIL can open, with sensible dimensions, without a display."""
import json

import numpy as np
import pytest
from PIL import Image

from minclip import plots


def check_png(path, min_w=200, min_h=150):
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
    assert min_w <= w <= 6000 and min_h <= h <= 6000, (w, h)
    return w, h


@pytest.fixture
def images():
    r = np.random.default_rng(0)
    return r.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)


def write_log(path, records, extra_lines=()):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        for line in extra_lines:
            f.write(line + "\n")


def test_plot_curves_training_and_eval(tmp_path):
    recs = [{"step": s, "epoch": s // 10, "loss": 4 * np.exp(-s / 20) + 0.1 * np.sin(s), "logit_scale": 14 + s / 10,
             "lr": 1e-3} for s in range(1, 41)]
    for s in (10, 20, 30, 40):
        recs.append({"step": s, "epoch": s // 10, "zeroshot/shape_top1": s / 50, "zeroshot/colour_top1": s / 45,
                     "zeroshot/pair_heldout_top1": s / 60, "zeroshot/shape_chance": 1 / 3})
    log = tmp_path / "metrics.jsonl"
    write_log(log, recs, extra_lines=["", '{"step": 41, "loss": 1.'])   # a half-written last line
    out = plots.plot_curves(log, tmp_path / "figs" / "curves.png", chance={"colour_top1": 1 / 6})
    assert out.endswith("curves.png")
    w, h = check_png(out, min_w=600)
    assert w > h


def test_plot_curves_without_eval_keys_or_loss(tmp_path):
    log = tmp_path / "metrics.jsonl"
    write_log(log, [{"step": s, "loss": 1.0 / s} for s in range(1, 20)])
    check_png(plots.plot_curves(log, tmp_path / "a.png"))
    write_log(log, [{"step": 5, "zeroshot/shape_top1": 0.5}])
    check_png(plots.plot_curves(log, tmp_path / "b.png"))
    write_log(log, [])
    check_png(plots.plot_curves(log, tmp_path / "c.png", chance={"shape_top1": 0.25}))


def test_plot_similarity(tmp_path, images):
    captions = ["a red circle", "a blue square", "a green triangle", "a yellow star"]
    sim = np.random.default_rng(1).uniform(0.1, 0.3, (4, 4))
    check_png(plots.plot_similarity(images, captions, sim, tmp_path / "sim.png"), min_w=300, min_h=250)
    chw = np.random.default_rng(2).standard_normal((4, 3, 16, 16)).astype(np.float32)  # CLIP-normalised input
    check_png(plots.plot_similarity(chw[:3], captions, sim[:, :3], tmp_path / "sim2.png"))
    with pytest.raises(ValueError, match="expected"):
        plots.plot_similarity(images, captions[:3], sim, tmp_path / "bad.png")


def test_plot_confusion(tmp_path):
    conf = np.array([[5, 1, 0], [0, 4, 2], [1, 0, 7]])
    check_png(plots.plot_confusion(conf, ["circle", "square", "triangle"], tmp_path / "c.png"))
    check_png(plots.plot_confusion(conf, ["circle", "square", "triangle"], tmp_path / "c2.png", normalize=False))


def test_image_grid(tmp_path, images):
    w, h = check_png(plots.image_grid(images, [f"{i}: 0.{i}" for i in range(4)], tmp_path / "g.png", ncols=2))
    check_png(plots.image_grid(list(images[:3]), None, tmp_path / "g2.png", ncols=5), min_h=100)
    with pytest.raises(ValueError, match="titles"):
        plots.image_grid(images, ["x"], tmp_path / "bad.png")


def test_denormalize_inverts_clip_normalisation():
    img = np.random.default_rng(3).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    from minclip.data.transforms import CLIP_MEAN, CLIP_STD
    chw = ((img / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)).transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(plots._as_hwc_uint8(chw), img)  # normalised images are shown as they were



def test_graph_of_a_small_expression_and_its_picture(tmp_path):
    """y = (a * b + a) ** 2: three Functions, the leaves a and b (green), every edge pointing right, `a`
    feeding two Functions; the graph is refused once backward has freed it."""
    from minclip import Tensor
    a = Tensor(np.array(2.0), requires_grad=True, name="a")
    b = Tensor(np.array(3.0), requires_grad=True, name="b")
    y = (a * b + a / 2) ** 2
    nodes, edges = plots.graph_of(y)
    functions = sorted(label for kind, label, _ in nodes.values() if kind == "function")
    assert functions == ["Add", "Div", "Mul", "Pow"]
    assert sorted(label for kind, label, _ in nodes.values() if kind == "leaf") == ["a", "b"]
    assert [label for kind, label, _ in nodes.values() if kind == "constant"] == ["()"]   # the 2 of a / 2
    assert all(nodes[u][2] < nodes[v][2] for u, v in edges), "an edge points left"
    assert sum(u == id(a) for u, _ in edges) == 2                                          # a is used twice
    check_png(plots.plot_graph(y, tmp_path / "graph.png"), min_w=300, min_h=100)
    y.backward()
    with pytest.raises(ValueError, match="freed by backward"):
        plots.graph_of(y)


def test_plot_graph_draws_into_given_axes_and_needs_somewhere_to_draw():
    from matplotlib.figure import Figure

    from minclip import Tensor
    from minclip.loss import clip_loss
    rng = np.random.default_rng(0)
    i_f, t_f = (Tensor(rng.standard_normal((4, 8)), requires_grad=True) for _ in range(2))
    loss = clip_loss(i_f, t_f, Tensor(np.array(2.6), requires_grad=True))
    ax = Figure().subplots()
    assert plots.plot_graph(loss, ax=ax) is ax
    nodes, edges = plots.graph_of(loss)
    assert "Functions" in ax.get_title() and len(ax.texts) == len(nodes) + len(edges)  # labels and arrows
    with pytest.raises(ValueError, match="give `ax`"):
        plots.plot_graph(loss)
