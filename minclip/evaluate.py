"""Evaluation: zero-shot classification, retrieval Recall@K and linear probes.

Radford et al. (2021) evaluate CLIP three ways, and so do we:

* zero-shot transfer (Section 3.1): embed the class names through the text
  encoder inside prompts such as "a photo of a {}." and classify an image by its
  most similar class embedding; several prompts per class are averaged
  ("prompt ensembling", Section 3.1.4);
* retrieval (Section 3.1.5, Table 13): Recall@K of image->text and text->image
  search on paired data (several captions per image, as in COCO and Flickr30k);
* linear probes (Section 3.2, Appendix A.3): L2-regularised logistic regression
  on frozen image features, the regularisation strength chosen on a validation split.

Every function accepts NumPy or CuPy arrays and returns NumPy arrays and Python floats.
"""
import os
import re
import sys
import warnings
from contextlib import contextmanager

import numpy as np
from tqdm.auto import tqdm

from . import backend, data
from . import functional as F
from .autograd import Tensor, enable_grad, no_grad
from .nn import Parameter
from .optim import Adam
from .plots import plot_confusion, plot_similarity
from .tokenizer import token_lengths, tokenizer_for

EVAL_BATCH_SIZE = 256  # images or texts per forward pass when evaluating (no graph is kept: memory allows more)


# ----------------------------------------------------------------------------- encoding
@contextmanager
def _eval_mode(model):
    """model.eval() inside the block; the previous training flag is restored afterwards."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield model
    finally:
        if hasattr(model, "train"):
            model.train(was_training)


def _progress(iterable, progress, desc, total=None):
    """Wrap in a tqdm bar when asked to and stderr is a terminal; otherwise return it unchanged."""
    if not progress or not sys.stderr.isatty():
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=False)


def trim_tokens(tokens):
    """Drop trailing columns that are zero (padding) in every row.

    tokens: int (N, L), zero-padded after each row's end-of-text token.
    Returns int (N, L') with L' <= L. The column holding the last EOT is never
    all-zero, so it is always kept (and at least one column is kept). The text
    transformer is causal and reads its output at the EOT position, so the
    padding after it never changes the features: dropping it only saves time.
    """
    xp = backend.get_array_module(tokens)
    nonzero = xp.flatnonzero((tokens != 0).any(axis=0))
    length = int(nonzero[-1]) + 1 if nonzero.size else 1
    return tokens[:, :length]


def _encode(model, what, x):
    """One batch through the image or text tower -> backend array (B, D)."""
    if what == "image":
        out = model.encode_image(backend.asarray(x))
    else:
        out = model.encode_text(trim_tokens(backend.asarray(x)))
    return backend.unwrap(out)


def encode_dataset(model, loader, what="image", progress=True):
    """Run a whole loader through the model without recording a graph.

    loader: yields (images float32 (B, 3, R, R), labels int (B,)) or (images, tokens int (B, L)).
    what: "image" -> (image features (N, D), second items concatenated: labels (N,) or tokens (N, L));
          "text"  -> (text features (N, D) of the second items, those items concatenated);
          "both"  -> (image features (N, D), text features (N, D)), for paired retrieval.
    progress: show a tqdm bar (only when stderr is a terminal).
    Features are NumPy float32. The model runs in eval mode; its previous mode is restored.
    """
    if what not in ("image", "text", "both"):
        raise ValueError(f"encode_dataset: what must be 'image', 'text' or 'both', got {what!r}")
    feats, seconds = [], []
    total = len(loader) if hasattr(loader, "__len__") else None
    with no_grad(), _eval_mode(model):
        for batch in _progress(loader, progress, f"encoding {what}", total):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ValueError("encode_dataset: the loader must yield pairs (images, labels) or (images, tokens)")
            first, second = batch
            if what == "text":
                feats.append(backend.to_numpy(_encode(model, "text", second)))
                seconds.append(backend.to_numpy(second))
            else:
                feats.append(backend.to_numpy(_encode(model, "image", first)))
                seconds.append(backend.to_numpy(_encode(model, "text", second)) if what == "both"
                               else backend.to_numpy(second))
    if not feats:
        raise ValueError("encode_dataset: the loader yielded no batches")
    if what == "both":
        return np.concatenate(feats).astype(np.float32), np.concatenate(seconds).astype(np.float32)
    if seconds[0].ndim == 2:  # token arrays: batches may have been padded to different lengths
        width = max(s.shape[1] for s in seconds)
        seconds = [np.pad(s, ((0, 0), (0, width - s.shape[1]))) for s in seconds]
    return np.concatenate(feats).astype(np.float32), np.concatenate(seconds)


def normalize_rows(x, eps=1e-12):
    """Unit-length rows of an array (any backend): what l2_normalize does to Tensors, for raw features."""
    xp = backend.get_array_module(x)
    return x / xp.maximum(xp.linalg.norm(x, axis=-1, keepdims=True), eps)


# ----------------------------------------------------------------------------- zero-shot
def text_tokenize_fn(model, tokenizer=None, texts=()):
    """texts -> int64 (n, model.context_length) tokens with the model's tokenizer (default: model.tokenizer,
    else the one tokenizer_for assumes), truncating at the model's context. Warns once, naming the first, when any
    of `texts` is longer than the captions the model was trained on (tokenizer.trained_length):
    positions past that have untrained embeddings, so such prompts give unreliable features."""
    if tokenizer is None:
        tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        tokenizer = tokenizer_for(model.vocab_size)
    limit = tokenizer.trained_length or model.context_length
    lengths = token_lengths(texts, tokenizer) if len(texts) else np.zeros(0, np.int64)
    if (lengths > limit).any():
        i = int(np.argmax(lengths > limit))
        warnings.warn(f"{int((lengths > limit).sum())} prompt(s) are longer than the {limit} tokens the model was "
                      f"trained on, e.g. {texts[i]!r} ({lengths[i]} tokens); shorten them or train with longer "
                      "captions", stacklevel=2)
    return lambda batch: tokenizer(batch, context_length=model.context_length, truncate=True)


def zero_shot_classifier(model, classnames, templates, tokenize_fn=None, batch_size=EVAL_BATCH_SIZE, tokenizer=None):
    """Class embeddings from prompts, with prompt ensembling (Section 3.1.4).

    For each class c: w_c = normalise(mean_t normalise(encode_text(template_t.format(c)))).
    "We construct the ensemble over the embedding space instead of probability space",
    so the averaged class embeddings are computed once and cost nothing per image.

    classnames: C strings; templates: T format strings with one "{}".
    tokenizer: a SimpleTokenizer; default model.tokenizer (set by minclip.load), else
        tokenizer_for(model.vocab_size). tokenize_fn: list of str -> int tokens (n, L), overrides it.
    Returns NumPy float32 (D, C): image features @ classifier gives the logits.
    """
    classnames, templates = list(classnames), list(templates)
    if not classnames or not templates:
        raise ValueError("zero_shot_classifier: need at least one class name and one template")
    texts = [t.format(c) for c in classnames for t in templates]  # class-major: (C * T,)
    if tokenize_fn is None:
        tokenize_fn = text_tokenize_fn(model, tokenizer, texts)
    feats = []
    with no_grad(), _eval_mode(model):
        for i in range(0, len(texts), batch_size):
            tokens = backend.to_numpy(tokenize_fn(texts[i:i + batch_size]))
            feats.append(backend.to_numpy(_encode(model, "text", tokens)))  # trims padding per batch
    emb = normalize_rows(np.concatenate(feats).astype(np.float64))      # (C * T, D), unit rows
    emb = emb.reshape(len(classnames), len(templates), -1).mean(1)  # (C, D), average over templates
    return normalize_rows(emb).T.astype(np.float32)                     # (D, C)


def accuracy(logits, labels, topk=(1, 5)):
    """Top-k accuracies: {"top1": float, "top5": float, ...}.

    logits (N, C), labels int (N,). k larger than C counts as C (every label is in the
    top C), but the key keeps the requested k. Ties are broken by the lower class index.
    """
    logits, labels = backend.to_numpy(logits), backend.to_numpy(labels)
    order = np.argsort(-logits, axis=1, kind="stable")  # (N, C), best class first
    out = {}
    for k in topk:
        hit = (order[:, :min(k, logits.shape[1])] == labels[:, None]).any(axis=1)
        out[f"top{k}"] = float(hit.mean()) if len(labels) else float("nan")
    return out


def zero_shot_scores(image_features, labels, classifier, topk=(1, 5)):
    """zero_shot_eval on features already computed: image_features (N, D), labels (N,), classifier (D, C)."""
    feats = normalize_rows(backend.to_numpy(image_features).astype(np.float32))
    classifier = backend.to_numpy(classifier).astype(np.float32)
    labels = backend.to_numpy(labels).astype(np.int64)
    n_classes = classifier.shape[1]
    # cosine similarities: CLIP multiplies them by its learnt logit scale, which changes no ranking
    logits = feats @ classifier                                       # (N, C)
    preds = logits.argmax(axis=1)
    confusion = np.zeros((n_classes, n_classes), np.int64)           # rows: true class, columns: predicted
    np.add.at(confusion, (labels, preds), 1)
    with np.errstate(invalid="ignore"):                              # a class without images gets NaN
        per_class = confusion.diagonal() / confusion.sum(axis=1)
    return dict(accuracy(logits, labels, topk), preds=preds, labels=labels, confusion=confusion,
                per_class_top1=per_class, n=len(labels))


def zero_shot_eval(model, loader, classifier, topk=(1, 5), progress=True):
    """Zero-shot classification of a labelled loader (Section 3.1.2).

    loader: yields (images (B, 3, R, R), labels int (B,)); classifier: (D, C) from zero_shot_classifier.
    Returns dict(top1=, top5=, ... floats, preds int (N,), labels int (N,),
    confusion int (C, C) with rows true and columns predicted classes, per_class_top1 float (C,), n=N).
    """
    feats, labels = encode_dataset(model, loader, "image", progress=progress)
    return zero_shot_scores(feats, labels, classifier, topk)


# ----------------------------------------------------------------------------- retrieval
def _first_hit_rank(sim, target, chunk=512):
    """0-based rank of column target[i] in row i of sim when each row is sorted in descending
    order, ties broken by the lower column index (a stable sort): what argsort would give."""
    xp = backend.get_array_module(sim)
    ranks = []
    cols = xp.arange(sim.shape[1])
    for i in range(0, sim.shape[0], chunk):
        s, t = sim[i:i + chunk], target[i:i + chunk]
        score = s[xp.arange(len(t)), t][:, None]                               # (b, 1)
        ahead = (s > score) | ((s == score) & (cols[None, :] < t[:, None]))    # (b, M)
        ranks.append(ahead.sum(axis=1))
    return xp.concatenate(ranks)


def retrieval_metrics(image_features, text_features, ks=(1, 5, 10), text_to_image=None):
    """Recall@K for image->text and text->image search.

    image_features (N_img, D), text_features (N_txt, D): L2-normalised here.
    text_to_image: int (N_txt,), the image each text describes; defaults to pairs
        (text i describes image i, N_txt == N_img). With several captions per image
        (COCO: 5) image->text counts a hit when ANY of the image's captions is in the
        top K, text->image when the text's one image is, as in the standard protocol.
    Returns {"image_to_text_R@1": ..., ..., "text_to_image_R@10": ..., "mean_recall": ...}
    (fractions in [0, 1]; mean_recall averages all of them). Ties between equal scores
    are broken by index, so a collapsed model (all features equal) does not look perfect.
    """
    img = normalize_rows(backend.asarray(image_features).astype(np.float32))
    txt = normalize_rows(backend.asarray(text_features).astype(np.float32))
    n_img, n_txt = img.shape[0], txt.shape[0]
    if text_to_image is None:
        if n_img != n_txt:
            raise ValueError(f"retrieval_metrics: {n_img} images and {n_txt} texts; pass text_to_image "
                             "(the image index of each text) when they are not one-to-one pairs")
        text_to_image = np.arange(n_img)
    t2i = backend.to_numpy(text_to_image).astype(np.int64)
    if t2i.shape != (n_txt,) or t2i.min() < 0 or t2i.max() >= n_img:
        raise ValueError(f"retrieval_metrics: text_to_image must hold {n_txt} image indices in [0, {n_img})")
    if len(np.unique(t2i)) != n_img:
        raise ValueError("retrieval_metrics: some images have no caption in text_to_image")
    xp = backend.get_array_module(img)
    t2i_x = backend.asarray(t2i)
    sim = img @ txt.T                                                        # (N_img, N_txt) cosine

    # text -> image: rank of each text's image in its column
    t2i_rank = backend.to_numpy(_first_hit_rank(sim.T, t2i_x))               # (N_txt,)
    # image -> text: rank of every caption within its image's row; the image keeps its best one
    cap_rank = np.empty(n_txt, np.int64)
    for i in range(0, n_txt, 512):
        j = xp.arange(i, min(i + 512, n_txt))
        rows = sim[t2i_x[j]]                                                 # (b, N_txt)
        cap_rank[i:i + len(j)] = backend.to_numpy(_first_hit_rank(rows, j))
    i2t_rank = np.full(n_img, n_txt, np.int64)
    np.minimum.at(i2t_rank, t2i, cap_rank)                                   # (N_img,)

    out = {}
    for name, rank in (("image_to_text", i2t_rank), ("text_to_image", t2i_rank)):
        for k in ks:
            out[f"{name}_R@{k}"] = float((rank < k).mean())
    out["mean_recall"] = float(np.mean(list(out.values())))
    return out


# ----------------------------------------------------------------------------- linear probe
def _fit_logreg(x, y, n_classes, weight_decay, epochs, lr, seed):
    """Multinomial logistic regression by full-batch Adam on minclip's autograd.

    x: backend float32 (N, D) standardised features, y: backend int64 (N,).
    Minimises mean cross-entropy + weight_decay / 2 * ||W||^2 (the bias is not penalised).
    Returns (W (C, D), b (C,)) as backend arrays.
    """
    rng = np.random.default_rng(seed)
    # The problem is convex, so the start hardly matters; a seeded draw keeps runs bit-identical.
    W = Parameter(backend.asarray(rng.normal(0, 0.01, (n_classes, x.shape[1])), dtype=x.dtype))
    b = Parameter(backend.xp.zeros(n_classes, dtype=x.dtype))
    opt = Adam([W, b], lr=lr)
    xt = Tensor(x)
    with enable_grad():  # train even if called inside no_grad()
        for _ in range(epochs):
            loss = F.cross_entropy(F.linear(xt, W, b), y) + (0.5 * weight_decay) * (W * W).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return W.data, b.data


def _probe_scores(W, b, x, y):
    """(accuracy, mean cross-entropy) of the linear classifier on (x, y)."""
    logits = Tensor(x @ W.T + b)                                       # (N, C)
    with no_grad():
        loss = F.cross_entropy(logits, y)
    return float((logits.data.argmax(axis=1) == y).mean()), float(loss.data)


def linear_probe(train_x, train_y, val_x, val_y, test_x=None, test_y=None,
                 weight_decays=(1e-4, 1e-3, 1e-2, 1e-1, 1.0), epochs=300, lr=0.1, seed=0):
    """Linear-probe evaluation on frozen features (Section 3.2, Appendix A.3).

    The paper fits scikit-learn's L-BFGS logistic regression and sweeps the L2 strength on a
    validation split. Here the same model is trained with minclip's own autograd: full-batch
    Adam on mean cross-entropy + weight_decay / 2 * ||W||^2. Features are standardised with the
    training statistics. The weight decay with the best validation accuracy wins (ties: lower
    validation loss); the probe is then refit on train + val and scored on test.

    train_x (N, D), train_y int (N,), likewise val and (optional) test; NumPy or CuPy.
    Returns dict(best_weight_decay=, val_acc=, test_acc= (None without test data),
    history=[(weight_decay, val_acc), ...]).
    """
    xp = backend.xp

    def prep(x, y):
        x = backend.asarray(backend.to_numpy(x), dtype=np.float32)
        return x, backend.asarray(backend.to_numpy(y), dtype=np.int64)

    train_x, train_y = prep(train_x, train_y)
    val_x, val_y = prep(val_x, val_y)
    if train_x.ndim != 2 or val_x.ndim != 2 or val_x.shape[1] != train_x.shape[1]:
        raise ValueError(f"linear_probe: features must be (N, D) with the same D; got train {train_x.shape}, "
                         f"val {val_x.shape}")
    labels = [train_y, val_y] + ([backend.asarray(backend.to_numpy(test_y))] if test_y is not None else [])
    n_classes = max(int(y.max()) for y in labels if y.size) + 1

    def standardise(fit, *xs):
        mean, std = fit.mean(axis=0), fit.std(axis=0) + 1e-6  # eps: constant features stay finite
        return [(x - mean) / std for x in xs]

    tr, va = standardise(train_x, train_x, val_x)
    history, best = [], None
    for wd in weight_decays:
        W, b = _fit_logreg(tr, train_y, n_classes, wd, epochs, lr, seed)
        acc, loss = _probe_scores(W, b, va, val_y)
        history.append((float(wd), acc))
        if best is None or (acc, -loss) > (best[1], -best[2]):
            best = (float(wd), acc, loss)
    result = dict(best_weight_decay=best[0], val_acc=best[1], test_acc=None, history=history)
    if test_x is not None and test_y is not None:
        test_x, test_y = prep(test_x, test_y)
        all_x, all_y = xp.concatenate([train_x, val_x]), xp.concatenate([train_y, val_y])
        all_x, te = standardise(all_x, all_x, test_x)
        W, b = _fit_logreg(all_x, all_y, n_classes, best[0], epochs, lr, seed)
        result["test_acc"] = _probe_scores(W, b, te, test_y)[0]
    return result


def k_shot_indices(labels, k, seed=0):
    """Indices of k examples of every class in `labels` (int (N,)), drawn without replacement: the
    labelled set of a k-shot linear probe (Sec. 3.2, Figure 7). Sorted by class, then by draw.
    Raises ValueError if a class has fewer than k examples."""
    labels = np.asarray(backend.to_numpy(labels))
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < k:
            raise ValueError(f"k_shot_indices: class {c} has {len(members)} examples, fewer than k={k}")
        picks.append(rng.choice(members, size=k, replace=False))
    return np.concatenate(picks)


# ----------------------------------------------------------------------------- class names of a labelled folder
def _plain_name(name):
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


def match_classnames(folder_classes, classnames):
    """Align class names a person typed with the class indices of an image folder.

    folder_classes: the folder names in class-index order (ImageFolder.classes, sorted).
    classnames: the names to put in prompts, in any order. Matching, first rule that applies:
      1. the same names as the folders (case, "_" and "-" ignored), in any order -> matched by name;
      2. folders named 0, 1, ..., C-1 -> folder "k" gets classnames[k];
      3. otherwise, the same count -> folder i gets classnames[i] in sorted-folder order (reported).
    Returns (names aligned with folder_classes, "name" | "number" | "order").
    Raises ValueError when the counts differ.
    """
    folder_classes, classnames = list(folder_classes), list(classnames)
    if len(classnames) != len(folder_classes):
        raise ValueError(f"{len(classnames)} class names for {len(folder_classes)} class folders "
                         f"({', '.join(folder_classes)}); give one name per folder")
    by_name = {_plain_name(c): c for c in classnames}
    if len(by_name) == len(classnames) and set(by_name) == {_plain_name(f) for f in folder_classes}:
        return [by_name[_plain_name(f)] for f in folder_classes], "name"
    if sorted(folder_classes, key=lambda f: (len(f), f)) == [str(k) for k in range(len(folder_classes))]:
        return [classnames[int(f)] for f in folder_classes], "number"
    return classnames, "order"


# ----------------------------------------------------------------------------- Shapes
class ShapesLabels:
    """A Shapes split as (image, class index) pairs for one attribute: "shape", "colour" or "pair"."""
    def __init__(self, shapes, key):
        self.shapes, self.labels = shapes, shapes.labels(key)

    def __len__(self):
        return len(self.shapes)

    def __getitem__(self, i):
        return self.shapes[i][0], int(self.labels[i])


def shapes_zeroshot(model, evals, tokenizer=None, batch_size=EVAL_BATCH_SIZE, details=None):
    """Zero-shot top-1 on Shapes: shape and colour on the val split, and colour-shape pairs on
    the held-out split, whose pairs never appear together in training (Section 3.1 style prompts).
    evals: {"val": Shapes, "heldout": Shapes}. Each split is encoded once.
    `details`, if a dict, receives the full zero_shot_scores per key."""
    out, feats = {}, {}
    for key, split in (("shape", "val"), ("colour", "val"), ("pair", "heldout")):
        if split not in feats:
            loader = data.DataLoader(ShapesLabels(evals[split], "shape"), batch_size=batch_size)
            feats[split] = encode_dataset(model, loader, progress=False)[0]
        classnames = data.Shapes.classnames(key)
        clf = zero_shot_classifier(model, classnames, data.TEMPLATES[key], tokenizer=tokenizer)
        res = zero_shot_scores(feats[split], evals[split].labels(key), clf)
        name = "pair_heldout" if key == "pair" else key
        out[f"zeroshot/{name}_top1"] = res["top1"]
        out[f"zeroshot/{name}_chance"] = 1 / len(classnames)
        if details is not None:
            details[key] = res
    return out


def shapes_plots(model, tokenizer, val, run_dir, shape_confusion, n=8):
    """similarity.png (Figure 1's image-text matrix on n pairs of the Shapes split `val`) and
    confusion.png (zero-shot shapes); returns their paths."""
    images = np.stack([val[i][0] for i in range(n)])
    captions = [val[i][1] for i in range(n)]
    with no_grad(), _eval_mode(model):
        img = normalize_rows(model.encode_image(images).numpy())
        txt = normalize_rows(model.encode_text(tokenizer(captions, model.context_length)).numpy())
    sim_path = plot_similarity(np.stack([np.asarray(val.render(i)) for i in range(n)]), captions, txt @ img.T,
                               os.path.join(run_dir, "similarity.png"))
    conf_path = plot_confusion(shape_confusion, data.Shapes.classnames("shape"), os.path.join(run_dir, "confusion.png"))
    return [sim_path, conf_path]
