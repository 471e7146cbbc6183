"""The `minclip` command line.

    minclip train                      # tiny-vit on Shapes, CPU, prints zero-shot accuracy
    minclip eval zeroshot --checkpoint logs/RUN/checkpoints/latest.npz --dataset shapes
    minclip eval retrieval --checkpoint C --data captions.csv
    minclip eval linear-probe --checkpoint C --dataset shapes
    minclip classify --checkpoint C cat.png dog.png --labels "a cat,a dog"
    minclip index build DIR --checkpoint C   # cache the folder's image embeddings (search does it too)
    minclip search --checkpoint C --images DIR "a red circle on the left" -k 5
    minclip plot logs/RUN
    minclip export logs/RUN/checkpoints/latest.npz model.npz   # weights + tokenizer to share, float16
    minclip info

Flag names follow open_clip's training script where one exists; the training flags are built
from TrainConfig's fields. A checkpoint carries its tokenizer, so no command needs one named.
Errors a person can fix (missing file, unknown model, bad column) print one line and exit 1.
"""
import argparse
import json
import os
import sys
import warnings
from dataclasses import fields

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from . import __version__, backend, data
from . import distributed as dist
from .autograd import no_grad
from .checkpoint import export_checkpoint
from .evaluate import (
    EVAL_BATCH_SIZE,
    ShapesLabels,
    encode_dataset,
    linear_probe,
    match_classnames,
    normalize_rows,
    retrieval_metrics,
    shapes_zeroshot,
    text_tokenize_fn,
    zero_shot_classifier,
    zero_shot_eval,
)
from .index import build_index, encode_images, search
from .loss import MAX_LOGIT_SCALE
from .plots import image_grid, plot_curves
from .pretrained import load
from .train import TrainConfig, config_from_args, train


# ----------------------------------------------------------------------------- helpers
def _model_and_tokenizer(name_or_path):
    """(model in eval mode, its tokenizer) from minclip.load: a checkpoint, released weights or a name."""
    model, _ = load(name_or_path)
    return model, model.tokenizer


def _write_json(path, obj):
    if path:
        with open(path, "w") as f:
            json.dump(obj, f, indent=2)
        print(f"wrote {path}")


def _encode_texts(model, tokenizer, texts):
    """Unit-length text features (N, D), NumPy; warns about texts longer than the trained captions."""
    tokens = text_tokenize_fn(model, tokenizer, texts)(texts)
    with no_grad():
        return normalize_rows(model.encode_text(tokens).numpy())


def _split(text, sep=","):
    return [s.strip() for s in text.split(sep) if s.strip()]


def _cell(v, floatfmt):
    if isinstance(v, (float, np.floating)):
        return format(float(v), floatfmt)
    return "" if v is None else str(v)


def format_table(rows, floatfmt=".4f"):
    """A plain aligned text table.

    rows: one dict (printed as two columns, key and value) or a list of dicts (one row
    each; the columns are the union of the keys in first-seen order). Numbers are
    right-aligned, floats formatted with `floatfmt`; arrays and missing cells print blank.
    """
    if isinstance(rows, dict):
        rows = [{"metric": k, "value": v} for k, v in rows.items()]
    rows = list(rows)
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    body = [[_cell(r.get(c), floatfmt) if np.ndim(r.get(c)) == 0 else "" for c in cols] for r in rows]
    numeric = [all(isinstance(r.get(c), (int, float, np.number)) or r.get(c) is None for r in rows) for c in cols]
    widths = [max(len(str(c)), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]

    def line(cells):
        return "  ".join(s.rjust(w) if num else s.ljust(w) for s, w, num in zip(cells, widths, numeric)).rstrip()
    out = [line([str(c) for c in cols]), "  ".join("-" * w for w in widths)]
    return "\n".join(out + [line(b) for b in body])


# ----------------------------------------------------------------------------- subcommands
def cmd_info(args):
    """Print the backend, device and BLAS that minclip will use."""
    if args.backend:
        backend.use(args.backend)
    for k, v in backend.info().items():
        print(f"{k:14s} {v}")
    return 0


def cmd_train(args):
    res = train(config_from_args(args))
    if not dist.is_main():  # under mpiexec rank 0 alone reports
        return 0
    loss = "n/a" if res["final_loss"] is None else f"{res['final_loss']:.3f}"
    print(f"\ntrained {res['step']} steps in {res['wall_time_s'] / 60:.1f} min; final loss {loss}")
    rows = [(k.split("/")[1][:-5], v, res[k.replace("_top1", "_chance")])
            for k, v in res.items() if k.startswith("zeroshot/") and k.endswith("_top1")]
    if rows:
        print("zero-shot accuracy (top-1)    model   chance")
        for name, acc, chance in rows:
            print(f"  {name:26s} {acc:7.1%}  {chance:7.1%}")
    print("plots: " + "\n       ".join(res["plots"]))
    print(f"checkpoint: {res['checkpoint']}")
    return 0


def cmd_eval(args):
    model, tokenizer = _model_and_tokenizer(args.checkpoint)
    if args.task == "zeroshot":
        res = _eval_zeroshot(model, tokenizer, args)
    elif args.task == "retrieval":
        res = _eval_retrieval(model, tokenizer, args)
    else:
        res = _eval_linear_probe(model, args)
    print(format_table({k: v for k, v in res.items() if k != "per_class_top1"}))
    if "per_class_top1" in res:
        print(format_table([{"class": c, "top1": a} for c, a in res["per_class_top1"].items()]))
    _write_json(args.json, res)
    return 0


def _labelled_data(model, args):
    """(dataset of (image, label), classnames) from --dataset shapes / --data FOLDER / --cifar10 PATH."""
    n_px = model.visual.input_resolution
    if args.data:
        ds = data.ImageFolder(args.data, image_size=n_px)
        return ds, ds.classes
    if args.cifar10:
        ds = data.CIFAR10(args.cifar10, train=False, image_size=n_px)
        return ds, ds.classes
    split = "heldout" if args.key == "pair" else "val"
    shapes = data.Shapes(split, length=args.size, image_size=n_px, seed=args.seed)
    return ShapesLabels(shapes, args.key), data.Shapes.classnames(args.key)


def _classnames_for(folder_classes, given):
    """Class names for the dataset's class indices: the dataset's own, or the given ones matched to them
    (match_classnames); the folder-to-name mapping is printed whenever names were given."""
    if not given:
        return folder_classes
    names, how = match_classnames(folder_classes, _split(given))
    rule = {"name": "matched by name", "number": "folder k -> k-th name",
            "order": "in sorted-folder order: check that this is what you meant"}[how]
    print(f"class names ({rule}):")
    for folder, name in zip(folder_classes, names):
        print(f"  {folder} -> {name}")
    return names


def _templates(args):
    if not args.templates:
        return data.TEMPLATES.get(args.key, ["a photo of a {}."])
    if args.templates == "cifar10":
        return data.CIFAR10_TEMPLATES
    return _split(args.templates, "|")


def _eval_zeroshot(model, tokenizer, args):
    if args.dataset == "shapes" and not (args.data or args.cifar10) and args.key == "all":
        evals = {s: data.Shapes(s, length=args.size, image_size=model.visual.input_resolution, seed=args.seed)
                 for s in ("val", "heldout")}
        return shapes_zeroshot(model, evals, tokenizer)
    if args.key == "all":
        args.key = "shape"
    ds, classes = _labelled_data(model, args)
    classnames = _classnames_for(classes, args.classnames)
    clf = zero_shot_classifier(model, classnames, _templates(args), tokenizer=tokenizer)
    res = zero_shot_eval(model, data.DataLoader(ds, batch_size=EVAL_BATCH_SIZE), clf)
    per_class = {c: (None if np.isnan(a) else float(a)) for c, a in zip(classnames, res["per_class_top1"])}
    return {"top1": res["top1"], "top5": res["top5"], "n": res["n"], "classes": len(classnames),
            "per_class_top1": per_class}


def _eval_retrieval(model, tokenizer, args):
    if not args.data:
        raise ValueError("eval retrieval needs --data CSV (image paths and captions)")
    ds = data.CsvImageText(args.data, img_key=args.csv_img_key, caption_key=args.csv_caption_key,
                           sep=args.csv_separator, image_size=model.visual.input_resolution)
    loader = data.DataLoader(ds, batch_size=EVAL_BATCH_SIZE,
                             tokenize_fn=text_tokenize_fn(model, tokenizer, ds.captions))
    img, txt = encode_dataset(model, loader, what="both")
    return retrieval_metrics(img, txt)


def _eval_linear_probe(model, args):
    if args.key == "all":
        args.key = "shape"
    ds, _ = _labelled_data(model, args)
    x, y = encode_dataset(model, data.DataLoader(ds, batch_size=EVAL_BATCH_SIZE))
    order = np.random.default_rng(args.seed).permutation(len(x))
    n_tr, n_va = int(0.6 * len(x)), int(0.2 * len(x))
    tr, va, te = order[:n_tr], order[n_tr:n_tr + n_va], order[n_tr + n_va:]
    res = linear_probe(x[tr], y[tr], x[va], y[va], x[te], y[te], seed=args.seed)
    return {k: v for k, v in res.items() if k != "history"}


def cmd_classify(args):
    model, tokenizer = _model_and_tokenizer(args.checkpoint)
    labels = _split(args.labels)
    if len(labels) < 2:
        raise ValueError("--labels needs at least two comma-separated labels")
    img = encode_images(model, args.images, progress=False)
    txt = _encode_texts(model, tokenizer, labels)
    scale = min(float(np.exp(backend.to_numpy(model.logit_scale.data))), MAX_LOGIT_SCALE)
    logits = scale * img @ txt.T               # as CLIP.forward: the model's learnt exp(t), clamped at 100
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for path, p in zip(args.images, probs):
        best = np.argsort(-p)[:3]
        print(f"{path}: " + ", ".join(f"{labels[i]} {p[i]:.1%}" for i in best))
    return 0


def cmd_index(args):
    model, _ = _model_and_tokenizer(args.checkpoint)
    index = build_index(model, args.images, batch_size=args.batch_size, progress=args.progress)
    print(f"indexed {len(index.files)} images under {args.images} ({len(index.encoded)} encoded now, "
          f"{len(index.files) - len(index.encoded)} unchanged)")
    return 0


def cmd_search(args):
    """Text-to-image search; the image embeddings come from the folder's index, built or updated first."""
    model, tokenizer = _model_and_tokenizer(args.checkpoint)
    index = build_index(model, args.images, progress=args.progress)
    if not index.files:
        raise ValueError(f"no images ({', '.join(data.IMG_EXTENSIONS)}) found under {args.images}")
    hits = search(index, _encode_texts(model, tokenizer, [args.query]), k=args.k)
    for rank, (path, score) in enumerate(hits, 1):
        print(f"{rank:2d}. {score:.3f}  {os.path.join(args.images, path)}")
    imgs = [np.asarray(Image.open(os.path.join(args.images, p)).convert("RGB").resize((128, 128))) for p, _ in hits]
    out = image_grid(imgs, [f"{score:.3f}" for _, score in hits], args.out or "search.png")
    print(f"wrote {out}")
    return 0


def cmd_plot(args):
    path = os.path.join(args.run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no metrics.jsonl in {args.run_dir} (is it a run folder from `minclip train`?)")
    print(f"wrote {plot_curves(path, os.path.join(args.run_dir, 'curves.png'))}")
    return 0


def cmd_export(args):
    out = export_checkpoint(args.checkpoint, args.out, dtype=np.dtype(args.dtype))
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB); load it with "
          f"minclip.load({out!r}) or --checkpoint {out}")
    return 0


# ----------------------------------------------------------------------------- the parser
def _add_train_args(p):
    """One --flag per TrainConfig field, with its default and help text."""
    for f in fields(TrainConfig):
        flag, extra = "--" + f.name.replace("_", "-"), dict(f.metadata)
        if f.type is bool:  # a switch that is on by default: --no-progress turns it off
            p.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false", **extra)
        else:
            p.add_argument(flag, type=f.type, default=f.default, **extra)


def _add_eval_data_args(p):
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", choices=["shapes"], default="shapes")
    p.add_argument("--data", help="image folder (zeroshot/linear-probe: root/CLASS/IMAGE) or CSV (retrieval)")
    p.add_argument("--cifar10", help="folder with CIFAR-10 python batches (test_batch, batches.meta)")
    p.add_argument("--key", default="all", choices=["all", "shape", "colour", "pair"], help="Shapes attribute")
    p.add_argument("--size", type=int, default=TrainConfig.eval_size, help="Shapes images per split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results to this JSON file")


def build_parser():
    p = argparse.ArgumentParser(prog="minclip", description="CLIP from scratch on NumPy/CuPy.")
    p.add_argument("--version", action="version", version=f"minclip {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a CLIP (default: tiny-vit on Shapes, a few minutes on 2 CPU cores)")
    _add_train_args(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint: zeroshot | retrieval | linear-probe")
    esub = e.add_subparsers(dest="task", metavar="TASK", required=True)
    for task in ("zeroshot", "retrieval", "linear-probe"):
        q = esub.add_parser(task)
        _add_eval_data_args(q)
        if task == "zeroshot":
            q.add_argument("--classnames", help="comma-separated class names (default: the folder names); the "
                                                "folder names in any order are matched by name")
            q.add_argument("--templates", help="'|'-separated prompt templates with {}, e.g. 'a photo of a {}.', "
                                               "or 'cifar10' for the paper's 18 CIFAR-10 templates")
        if task == "retrieval":
            q.add_argument("--csv-img-key", default=data.CSV_IMG_KEY)
            q.add_argument("--csv-caption-key", default=data.CSV_CAPTION_KEY)
            q.add_argument("--csv-separator", default=data.CSV_SEPARATOR)
        q.set_defaults(func=cmd_eval)

    c = sub.add_parser("classify", help="zero-shot classify images among the given labels")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("images", nargs="+")
    c.add_argument("--labels", required=True, help='comma-separated, e.g. "a red circle,a blue square"')
    c.set_defaults(func=cmd_classify)

    s = sub.add_parser("search", help="text-to-image search over a folder of images")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--images", required=True, help="folder of images")
    s.add_argument("query")
    s.add_argument("-k", type=int, default=5)
    s.add_argument("--out", help="PNG grid of the top-k (default: search.png)")
    s.add_argument("--no-progress", dest="progress", action="store_false")
    s.set_defaults(func=cmd_search)

    ix = sub.add_parser("index", help="cache the image embeddings of a folder for search: index build DIR")
    isub = ix.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = isub.add_parser("build", help="encode new or changed images under DIR into DIR/.minclip-index")
    b.add_argument("images", metavar="DIR")
    b.add_argument("--checkpoint", required=True)
    b.add_argument("--batch-size", type=int, default=64)
    b.add_argument("--no-progress", dest="progress", action="store_false")
    b.set_defaults(func=cmd_index)

    pl = sub.add_parser("plot", help="(re)draw the curves of a run folder")
    pl.add_argument("run_dir")
    pl.set_defaults(func=cmd_plot)

    x = sub.add_parser("export", help="write a checkpoint's weights, tokenizer and results to share (no optimizer)")
    x.add_argument("checkpoint", help="a run's checkpoint, e.g. logs/RUN/checkpoints/latest.npz")
    x.add_argument("out", help="the .npz file to write")
    x.add_argument("--dtype", choices=["float16", "float32"], default="float16",
                   help="precision of the weights (float16 halves the file; loading upcasts to float32)")
    x.set_defaults(func=cmd_export)

    info = sub.add_parser("info", help="show backend, device and BLAS")
    info.add_argument("--backend", choices=backend.NAMES, help="backend to report on")
    info.set_defaults(func=cmd_info)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings for people: one line each, printed through tqdm so a progress bar is redrawn below it
    instead of the warning landing in the middle of the bar's line."""
    tqdm.write(f"minclip: warning: {message}", file=sys.stderr)


def main(argv=None):
    """The `minclip` command. Under `mpiexec -n K` (K > 1) a failure on one rank aborts all of them,
    as `python -m mpi4py` does, instead of leaving the others waiting."""
    return dist.run_or_abort(_main, argv)


def _main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    shown, warnings.showwarning = warnings.showwarning, _show_warning  # warnings for people, like errors
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, backend.BackendError) as e:  # CheckpointError is a ValueError
        print(f"minclip: error: {e}", file=sys.stderr)  # errors for people: one line, no traceback
        return 1
    except KeyboardInterrupt as e:
        print(f"\nminclip: {e}" if str(e) else "\nminclip: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
