"""Figures: training curves, the similarity matrix of Figure 1, confusion matrices, image grids and
the autograd graph of a Tensor.

Every function draws on a `matplotlib.figure.Figure` (not pyplot), writes a PNG and returns
its path (plot_graph can also draw into a notebook's axes). A bare Figure saves through the Agg
canvas, so no display is ever needed and the pyplot backend of a notebook or script that imports this
module is left alone.
"""
import json
import math
import os

import numpy as np
from matplotlib.figure import Figure

from .backend import to_numpy
from .data.transforms import denormalize


def _figure(width, height):
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, out_path):
    out_path = os.fspath(out_path)
    if os.path.dirname(out_path):
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
    fig.savefig(out_path, format="png", bbox_inches="tight")
    return out_path


def _as_hwc_uint8(img):
    """Accept uint8 (H, W, 3), grey (H, W), or CLIP-normalised float (3, H, W) (NumPy or CuPy)."""
    img = to_numpy(img)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        return denormalize(np.repeat(img, 3 // img.shape[0], axis=0))
    if img.dtype != np.uint8:
        img = np.clip(img * 255 if img.max() <= 1 else img, 0, 255).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img


# ----------------------------------------------------------------------------- training curves
def _read_jsonl(path):
    """Records of a JSONL log; blank or half-written lines (a run still writing) are skipped."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict) and isinstance(r.get("step"), (int, float)):
                records.append(r)
    return records


def _ema(values, weight):
    """Exponential moving average with bias correction (TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i))
    return out


def plot_curves(metrics_jsonl_path, out_path, chance=None, eval_prefix="zeroshot/", smoothing=0.9):
    """Training loss (left) and zero-shot accuracies (right) against the step.

    metrics_jsonl_path: one JSON dict per line with "step" and some of "loss", "logit_scale",
        "lr", and eval keys such as "zeroshot/shape_top1"; lines without a key are skipped
        for that curve, so training and eval lines can be mixed freely.
    chance: {"shape_top1" or "zeroshot/shape_top1": 1/3, ...} draws a dashed chance line
        per curve; logged keys "<prefix><name>_chance" are used for "<name>_top1" too.
    Returns out_path.
    """
    records = _read_jsonl(metrics_jsonl_path)
    fig = _figure(12, 4.5)
    ax_loss, ax_acc = fig.subplots(1, 2)

    train = [(r["step"], r["loss"]) for r in records if isinstance(r.get("loss"), (int, float))]
    train = [(s, v) for s, v in train if math.isfinite(v)]
    if train:
        steps, loss = zip(*sorted(train))
        ax_loss.plot(steps, loss, color="tab:blue", alpha=0.25, lw=1, label="loss")
        ax_loss.plot(steps, _ema(loss, smoothing), color="tab:blue", lw=2, label=f"smoothed (EMA {smoothing})")
        ax_loss.legend(loc="upper right")
    else:
        ax_loss.text(0.5, 0.5, "no training loss logged", ha="center", va="center", transform=ax_loss.transAxes)
    scale = [(r["step"], r["logit_scale"]) for r in records if isinstance(r.get("logit_scale"), (int, float))]
    if scale:  # the learned temperature, on its own axis: it grows from 1/0.07 towards the 100 cap
        ax_scale = ax_loss.twinx()
        ax_scale.plot(*zip(*sorted(scale)), color="tab:gray", ls=":", lw=1.5)
        ax_scale.set_ylabel("logit scale", color="tab:gray")
        ax_scale.tick_params(axis="y", colors="tab:gray")
    ax_loss.set(xlabel="step", ylabel="contrastive loss", title="Training loss")

    chance = {k if k.startswith(eval_prefix) else eval_prefix + k: v for k, v in (chance or {}).items()}
    for r in records:  # chance levels logged by the trainer
        for k, v in r.items():
            if k.startswith(eval_prefix) and k.endswith("_chance") and isinstance(v, (int, float)):
                chance.setdefault(k[:-len("_chance")] + "_top1", v)
    keys = list(dict.fromkeys(k for r in records for k, v in r.items() if k.startswith(eval_prefix)
                              and not k.endswith("_chance") and isinstance(v, (int, float))))
    for i, key in enumerate(keys):
        pts = sorted((r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)))
        color = f"C{i % 10}"
        ax_acc.plot(*zip(*pts), marker="o", ms=3, color=color, label=key[len(eval_prefix):])
        if key in chance:
            ax_acc.axhline(chance[key], color=color, ls="--", lw=1, alpha=0.7)
    for key, v in chance.items():  # chance levels given for curves that were never logged
        if key not in keys and not key.endswith("_chance"):
            ax_acc.axhline(v, color="gray", ls="--", lw=1, label=f"{key[len(eval_prefix):]} chance")
    if keys:
        values = [r[k] for r in records for k in keys if isinstance(r.get(k), (int, float))]
        if max(values) <= 1:
            ax_acc.set_ylim(0, 1.02)
        ax_acc.legend(loc="lower right", fontsize=8, title="dashed: chance", title_fontsize=8)
    else:
        ax_acc.text(0.5, 0.5, "no zero-shot evaluations logged", ha="center", va="center",
                    transform=ax_acc.transAxes)
    ax_acc.set(xlabel="step", ylabel="accuracy", title="Zero-shot accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    return _save(fig, out_path)


# ----------------------------------------------------------------------------- Figure 1
def plot_similarity(images, captions, similarity, out_path, title="Cosine similarity between text and image features"):
    """The similarity matrix of CLIP's Figure 1 (as drawn in OpenAI's notebook).

    images: N_img images, uint8 (H, W, 3) (or CLIP-normalised float (3, H, W)), shown along the top;
    captions: N_txt strings, along the left;
    similarity: (N_txt, N_img) cosine similarities, row i caption, column j image
        (text_features @ image_features.T, both normalised). Each cell shows its value.
    Returns out_path.
    """
    sim = np.asarray(to_numpy(similarity), np.float64)
    n_txt, n_img = len(captions), len(images)
    if sim.shape != (n_txt, n_img):
        raise ValueError(f"plot_similarity: similarity has shape {sim.shape}, expected (captions, images) = "
                         f"({n_txt}, {n_img})")
    fig = _figure(max(6.0, 1.1 * n_img + 3), max(4.0, 0.8 * n_txt + 2))
    ax = fig.subplots()
    vmin, vmax = float(sim.min()), float(sim.max())
    ax.imshow(sim, vmin=vmin, vmax=vmax, cmap="viridis")
    for j, img in enumerate(images):  # each picture in its own cell above column j
        ax.imshow(_as_hwc_uint8(img), extent=(j - 0.5, j + 0.5, -1.6, -0.6), origin="upper",
                  interpolation="nearest")  # small pictures stay crisp
    mid = (vmin + vmax) / 2
    for i in range(n_txt):
        for j in range(n_img):
            ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=9,
                    color="black" if sim[i, j] > mid else "white")
    ax.set_yticks(range(n_txt), list(captions), fontsize=10)
    ax.set_xticks([])
    for side in ("left", "top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_xlim(-0.5, n_img - 0.5)
    ax.set_ylim(n_txt - 0.5, -1.7)
    ax.set_title(title)
    return _save(fig, out_path)


# ----------------------------------------------------------------------------- confusion, grids
def plot_confusion(confusion, classnames, out_path, normalize=True, title=None):
    """A confusion matrix as a heat map: rows true class, columns predicted class.

    confusion: int (C, C) counts, e.g. zero_shot_eval(...)["confusion"]; classnames: C strings.
    normalize: divide each row by its count, so the diagonal is per-class recall.
    Returns out_path.
    """
    counts = np.asarray(to_numpy(confusion), np.float64)
    c = counts.shape[0]
    if counts.shape != (c, c) or len(classnames) != c:
        raise ValueError(f"plot_confusion: confusion has shape {counts.shape} but there are {len(classnames)} "
                         "class names; expected (C, C) with C names")
    acc = np.trace(counts) / max(counts.sum(), 1)
    shown = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    size = max(4.0, 0.45 * c + 2.5)
    fig = _figure(size + 1, size)
    ax = fig.subplots()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if c <= 25:  # numbers in cells only while they stay readable
        for i in range(c):
            for j in range(c):
                text = f"{shown[i, j]:.2f}" if normalize else f"{int(counts[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if shown[i, j] > 0.5 * shown.max() else "black")
    ax.set_xticks(range(c), list(classnames), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(c), list(classnames), fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title or f"Confusion matrix (accuracy {acc:.1%})")
    return _save(fig, out_path)


def image_grid(images, titles, out_path, ncols=5):
    """Images in a grid with a title above each (e.g. `minclip search` results with scores).

    images: a list or array of uint8 (H, W, 3) (or CLIP-normalised float (3, H, W)) images;
    titles: one string per image, or None. Returns out_path.
    """
    n = len(images)
    if n == 0:
        raise ValueError("image_grid: no images to draw")
    titles = [None] * n if titles is None else list(titles)
    if len(titles) != n:
        raise ValueError(f"image_grid: {n} images but {len(titles)} titles")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = _figure(2.4 * ncols, 2.6 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, img, t in zip(axes, images, titles):
        ax.imshow(_as_hwc_uint8(img), interpolation="nearest")
        if t:
            ax.set_title(t, fontsize=9)
    return _save(fig, out_path)


# ----------------------------------------------------------------------------- the autograd graph
def graph_of(y):
    """The graph that made Tensor `y`, as drawn by plot_graph: (nodes, edges).

    nodes: {key: (kind, label, column)}, kind "leaf" (a tensor that wants a gradient and was made by no
    Function), "constant" (one that wants none, e.g. the 2 of `x / 2`), "tensor" (made by a Function) or
    "function" (label: the class name). A tensor's label is its name, else its shape. Columns: 2 * generation
    for tensors, 2 * generation + 1 for Functions, a constant just left of its first Function; every edge
    points to the right.
    edges: [(from key, to key)], input tensor -> Function -> output tensor.
    """
    def tensor_node(t, column, shape=None):
        label = t.name if t is not None and t.name else str(tuple(t.shape if t is not None else shape))
        if t is None or t.creator is not None:
            return "tensor", label, column
        return ("leaf", label, column) if t.requires_grad else ("constant", label, column)

    nodes, edges = {id(y): tensor_node(y, 2 * y.generation)}, []
    stack, seen = ([y.creator], {id(y.creator)}) if y.creator is not None else ([], set())
    while stack:
        f = stack.pop()
        if f.inputs is None:
            raise ValueError("graph_of: the graph was freed by backward; draw it before calling backward "
                             "(or use backward(retain_graph=True))")
        column = 2 * f.generation + 1
        nodes[id(f)] = ("function", type(f).__name__, column)
        for ref, (shape, _) in zip(f.outputs, f.out_meta):
            out = ref()
            key = id(out) if out is not None else (id(f), len(edges))  # an output nobody kept: its shape
            nodes.setdefault(key, tensor_node(out, column + 1, shape))
            edges.append((id(f), key))
        for x in f.inputs:
            node = tensor_node(x, 2 * x.generation)
            nodes.setdefault(id(x), node[:2] + (column - 1,) if node[0] == "constant" else node)
            edges.append((id(x), id(f)))
            if x.creator is not None and id(x.creator) not in seen:
                seen.add(id(x.creator))
                stack.append(x.creator)
    return nodes, edges


def _graph_rows(nodes, edges, sweeps=4):
    """A row for every node: each column ordered by the mean row of its neighbours (the barycentre
    heuristic), sweeping right and left a few times, so that few edges cross."""
    columns = {}
    for key, (_, _, col) in nodes.items():
        columns.setdefault(col, []).append(key)
    before, after = {}, {}
    for a, b in edges:
        after.setdefault(a, []).append(b)
        before.setdefault(b, []).append(a)
    row = {key: i for keys in columns.values() for i, key in enumerate(keys)}
    order = sorted(columns)
    for sweep in range(sweeps):
        neighbours = before if sweep % 2 == 0 else after
        for col in order if sweep % 2 == 0 else order[::-1]:
            keys = columns[col]
            keys.sort(key=lambda k: np.mean([row[n] for n in neighbours[k]]) if neighbours.get(k) else row[k])
            row.update({k: i for i, k in enumerate(keys)})
    height = max(len(keys) for keys in columns.values())
    return {key: (nodes[key][2], (len(columns[nodes[key][2]]) - 1) / 2 - r) for key, r in row.items()}, height


def plot_graph(y, out_path=None, ax=None, title=None):
    """Draw the autograd graph of Tensor `y` left to right: rounded boxes for tensors (name or shape;
    green for the leaves that receive .grad, dotted for constants), grey boxes for Functions. Draws into
    `ax` when given, otherwise into a new figure saved as PNG at `out_path`; returns `ax` or `out_path`."""
    nodes, edges = graph_of(y)
    pos, height = _graph_rows(nodes, edges)
    columns = {col for _, _, col in nodes.values()}
    fig = None
    if ax is None:
        if out_path is None:
            raise ValueError("plot_graph: give `ax` to draw into or `out_path` to save a PNG")
        fig = _figure(max(4.0, 0.9 * len(columns)), max(2.0, 0.6 * height + 1))
        ax = fig.subplots()
    style = {"leaf": dict(boxstyle="round", fc="#c7e9c0", ec="#31a354"),
             "constant": dict(boxstyle="round", fc="white", ec="#969696", ls=":"),
             "tensor": dict(boxstyle="round", fc="white", ec="#636363"),
             "function": dict(boxstyle="square", fc="#d9d9d9", ec="#252525")}
    for a, b in edges:
        skips = pos[b][0] - pos[a][0] > 1  # an edge past other columns bends, so it is not hidden behind them
        ax.annotate("", xy=pos[b], xytext=pos[a], arrowprops=dict(
            arrowstyle="->", color="#969696", lw=0.8, shrinkA=14, shrinkB=14,
            connectionstyle="arc3,rad=-0.2" if skips else "arc3"))
    for key, (kind, label, _) in nodes.items():
        ax.text(*pos[key], label, ha="center", va="center", fontsize=7, bbox=style[kind], zorder=3)
    ax.set_xlim(min(columns) - 0.7, max(columns) + 0.7)
    ax.set_ylim(-height / 2 - 0.5, height / 2 + 0.5)
    ax.axis("off")
    ax.set_title(title or f"graph of a tensor of shape {tuple(y.shape)}: "
                 f"{sum(k == 'function' for k, _, _ in nodes.values())} Functions", fontsize=9)
    return _save(fig, out_path) if fig is not None else ax
