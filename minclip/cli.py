"""The `minclip` command line.

    minclip train                      # tiny-vit on Shapes, CPU, prints zero-shot accuracy
    minclip eval zeroshot --checkpoint logs/RUN/checkpoints/latest.npz --dataset shapes
    minclip eval retrieval --checkpoint C --data captions.csv
    minclip eval linear-probe --checkpoint C --dataset shapes
    minclip classify --checkpoint C cat.png dog.png --labels "a cat,a dog"
    minclip search --checkpoint C --images DIR "a red circle on the left" -k 5
    minclip plot logs/RUN
    minclip info

Flag names follow open_clip's training script where one exists. Errors a person
can fix (missing file, unknown model, bad column) print one line and exit 1.
"""
import argparse
import json
import os
import sys

from . import __version__, backend
from .checkpoint import CheckpointError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


# ----------------------------------------------------------------------------- helpers
def load_model(path):
    """A CLIP in eval mode from a minclip checkpoint or a plain .npz state_dict, its config inferred from
    the weight shapes (build_model)."""
    from .checkpoint import load_weights
    from .model import build_model
    return build_model(load_weights(path))


def _write_json(path, obj):
    if path:
        with open(path, "w") as f:
            json.dump(obj, f, indent=2)
        print(f"wrote {path}")


def _image_paths(folder):
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}")
    return paths


def _load_images(paths, n_px):
    """Preprocessed images (N, 3, n_px, n_px) float32, as OpenAI's preprocess."""
    import numpy as np
    from PIL import Image

    from .data.transforms import clip_preprocess
    pre = clip_preprocess(n_px)
    out = []
    for p in paths:
        if not os.path.exists(p):
            raise FileNotFoundError(f"image not found: {p}")
        try:
            with Image.open(p) as im:
                out.append(pre(im))
        except OSError as e:
            raise ValueError(f"cannot read image {p}: {e}") from e
    return np.stack(out)


def _encode_images(model, images, batch_size=128):
    import numpy as np

    from .autograd import no_grad
    feats = []
    with no_grad():
        for i in range(0, len(images), batch_size):
            f = model.encode_image(images[i:i + batch_size]).numpy()
            feats.append(f / np.linalg.norm(f, axis=1, keepdims=True))
    return np.concatenate(feats)


def _encode_texts(model, texts):
    import numpy as np

    from .autograd import no_grad
    from .evaluate import trim_tokens
    from .tokenizer import tokenize_fn_for
    tokens = tokenize_fn_for(model.vocab_size, model.context_length)(texts)
    with no_grad():
        f = model.encode_text(trim_tokens(tokens)).numpy()
    return f / np.linalg.norm(f, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- subcommands
def cmd_info(args):
    """Print the backend, device and BLAS that minclip will use."""
    if args.backend:
        backend.use(args.backend)
    for k, v in backend.info().items():
        print(f"{k:14s} {v}")
    return 0


def cmd_train(args):
    from .train import config_from_args, train
    cfg = config_from_args(args)
    res = train(cfg)
    from . import distributed as dist
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
    from .evaluate import format_table
    model = load_model(args.checkpoint)
    if args.task == "zeroshot":
        res = _eval_zeroshot(model, args)
    elif args.task == "retrieval":
        res = _eval_retrieval(model, args)
    else:
        res = _eval_linear_probe(model, args)
    print(format_table(res))
    _write_json(args.json, res)
    return 0


def _labelled_data(model, args):
    """(dataset of (image, label), classnames) from --dataset shapes / --data FOLDER / --cifar10 PATH."""
    from . import data
    n_px = model.visual.input_resolution
    if args.data:
        ds = data.ImageFolder(args.data, image_size=n_px)
        return ds, ds.classes
    if args.cifar10:
        ds = data.CIFAR10(args.cifar10, train=False, image_size=n_px)
        return ds, ds.classes
    from .train import ShapesLabels
    split = "heldout" if args.key == "pair" else "val"
    shapes = data.Shapes(split, length=args.size, image_size=n_px, seed=args.seed)
    return ShapesLabels(shapes, args.key), data.Shapes.classnames(args.key)


def _eval_zeroshot(model, args):
    from . import data
    from .evaluate import zero_shot_classifier, zero_shot_eval
    if args.dataset == "shapes" and not (args.data or args.cifar10) and args.key == "all":
        from .train import shapes_zeroshot
        evals = {s: data.Shapes(s, length=args.size, image_size=model.visual.input_resolution, seed=args.seed)
                 for s in ("val", "heldout")}
        return shapes_zeroshot(model, evals)
    if args.key == "all":
        args.key = "shape"
    ds, classnames = _labelled_data(model, args)
    if args.classnames:
        classnames = [c.strip() for c in args.classnames.split(",")]
    templates = [t.strip() for t in args.templates.split("|")] if args.templates else \
        data.TEMPLATES.get(args.key, ["a photo of a {}."])
    clf = zero_shot_classifier(model, classnames, templates)
    res = zero_shot_eval(model, data.DataLoader(ds, batch_size=256), clf)
    return {"top1": res["top1"], "top5": res["top5"], "n": res["n"], "classes": len(classnames)}


def _eval_retrieval(model, args):
    from . import data
    from .evaluate import encode_dataset, retrieval_metrics
    if not args.data:
        raise ValueError("eval retrieval needs --data CSV (image paths and captions)")
    ds = data.CsvImageText(args.data, img_key=args.csv_img_key, caption_key=args.csv_caption_key,
                           sep=args.csv_separator, image_size=model.visual.input_resolution)
    from .tokenizer import tokenize_fn_for
    loader = data.DataLoader(ds, batch_size=256, tokenize_fn=tokenize_fn_for(model.vocab_size, model.context_length))
    img, txt = encode_dataset(model, loader, what="both")
    return retrieval_metrics(img, txt)


def _eval_linear_probe(model, args):
    import numpy as np

    from . import data
    from .evaluate import encode_dataset, linear_probe
    if args.key == "all":
        args.key = "shape"
    ds, _ = _labelled_data(model, args)
    x, y = encode_dataset(model, data.DataLoader(ds, batch_size=256))
    order = np.random.default_rng(args.seed).permutation(len(x))
    n_tr, n_va = int(0.6 * len(x)), int(0.2 * len(x))
    tr, va, te = order[:n_tr], order[n_tr:n_tr + n_va], order[n_tr + n_va:]
    res = linear_probe(x[tr], y[tr], x[va], y[va], x[te], y[te], seed=args.seed)
    return {k: v for k, v in res.items() if k != "history"}


def cmd_classify(args):
    import numpy as np
    model = load_model(args.checkpoint)
    labels = [s.strip() for s in args.labels.split(",") if s.strip()]
    if len(labels) < 2:
        raise ValueError("--labels needs at least two comma-separated labels")
    img = _encode_images(model, _load_images(args.images, model.visual.input_resolution))
    txt = _encode_texts(model, labels)
    probs = np.exp(100 * img @ txt.T)
    probs /= probs.sum(1, keepdims=True)
    for path, p in zip(args.images, probs):
        best = np.argsort(-p)[:3]
        print(f"{path}: " + ", ".join(f"{labels[i]} {p[i]:.1%}" for i in best))
    return 0


def cmd_search(args):
    import numpy as np
    model = load_model(args.checkpoint)
    paths = _image_paths(args.images)
    cache = os.path.join(args.images, ".minclip-embeddings.npz")
    key = f"{os.path.abspath(args.checkpoint)}:{os.path.getmtime(args.checkpoint)}"
    feats = None
    if os.path.exists(cache):  # image embeddings are the slow part: reuse them while images and model match
        with np.load(cache) as z:
            if str(z["key"]) == key and list(z["paths"]) == paths:
                feats = z["features"]
    if feats is None:
        feats = _encode_images(model, _load_images(paths, model.visual.input_resolution))
        np.savez(cache, key=key, paths=np.array(paths), features=feats)
    scores = feats @ _encode_texts(model, [args.query])[0]
    top = np.argsort(-scores)[:args.k]
    for rank, i in enumerate(top, 1):
        print(f"{rank:2d}. {scores[i]:.3f}  {paths[i]}")
    from PIL import Image

    from .plots import image_grid
    imgs = [np.asarray(Image.open(paths[i]).convert("RGB").resize((128, 128))) for i in top]
    out = image_grid(imgs, [f"{scores[i]:.3f}" for i in top], args.out or "search.png")
    print(f"wrote {out}")
    return 0


def cmd_plot(args):
    from .plots import plot_curves
    path = os.path.join(args.run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no metrics.jsonl in {args.run_dir} (is it a run folder from `minclip train`?)")
    print(f"wrote {plot_curves(path, os.path.join(args.run_dir, 'curves.png'))}")
    return 0


# ----------------------------------------------------------------------------- the parser
def _add_train_args(p):
    from .train import TrainConfig
    d = TrainConfig()
    p.add_argument("--dataset", choices=["shapes", "csv"], default=d.dataset)
    p.add_argument("--train-data", help="CSV of image paths and captions (--dataset csv)")
    p.add_argument("--val-data", help="CSV for retrieval evaluation (--dataset csv)")
    p.add_argument("--csv-img-key", default=d.csv_img_key)
    p.add_argument("--csv-caption-key", default=d.csv_caption_key)
    p.add_argument("--csv-separator", default=d.csv_separator)
    p.add_argument("--model", default=d.model, help="config name, e.g. tiny-vit, tiny-rn, ViT-B-32")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--wd", type=float, default=d.wd)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--train-size", type=int, default=d.train_size, help="Shapes pairs per epoch")
    p.add_argument("--eval-size", type=int, default=d.eval_size, help="Shapes images per evaluation split")
    p.add_argument("--context-length", type=int, default=d.context_length, help="caption tokens in training")
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--backend", choices=["numpy", "cupy"], default=d.backend)
    p.add_argument("--logs", default=d.logs)
    p.add_argument("--name", default=d.name)
    p.add_argument("--resume", help="checkpoint to continue from")
    p.add_argument("--pretrained", help="checkpoint whose weights start a new (fine-tuning) run")
    p.add_argument("--overfit-batch", type=int, default=0, metavar="N",
                   help="sanity check: train on one fixed batch of N pairs; the loss must fall towards 0")
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--blas-threads", type=int, default=d.blas_threads, metavar="N",
                   help="BLAS threads per process (default 0: cores // processes under mpiexec)")


def _add_eval_data_args(p):
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", choices=["shapes"], default="shapes")
    p.add_argument("--data", help="image folder (zeroshot/linear-probe: root/CLASS/IMAGE) or CSV (retrieval)")
    p.add_argument("--cifar10", help="folder with CIFAR-10 python batches (test_batch, batches.meta)")
    p.add_argument("--key", default="all", choices=["all", "shape", "colour", "pair"], help="Shapes attribute")
    p.add_argument("--size", type=int, default=512, help="Shapes images per split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results to this JSON file")


def build_parser():
    p = argparse.ArgumentParser(prog="minclip", description="CLIP from scratch on NumPy/CuPy.")
    p.add_argument("--version", action="version", version=f"minclip {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a CLIP (default: tiny-vit on Shapes, ~11 min on 2 CPU cores)")
    _add_train_args(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint: zeroshot | retrieval | linear-probe")
    esub = e.add_subparsers(dest="task", metavar="TASK", required=True)
    for task in ("zeroshot", "retrieval", "linear-probe"):
        q = esub.add_parser(task)
        _add_eval_data_args(q)
        if task == "zeroshot":
            q.add_argument("--classnames", help="comma-separated class names (default: the dataset's)")
            q.add_argument("--templates", help="'|'-separated prompt templates with {}, e.g. 'a photo of a {}.'")
        if task == "retrieval":
            q.add_argument("--csv-img-key", default="filepath")
            q.add_argument("--csv-caption-key", default="title")
            q.add_argument("--csv-separator", default="\t")
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
    s.set_defaults(func=cmd_search)

    pl = sub.add_parser("plot", help="(re)draw the curves of a run folder")
    pl.add_argument("run_dir")
    pl.set_defaults(func=cmd_plot)

    info = sub.add_parser("info", help="show backend, device and BLAS")
    info.add_argument("--backend", choices=["numpy", "cupy"], help="backend to report on")
    info.set_defaults(func=cmd_info)
    return p


def main(argv=None):
    """Under `mpiexec -n K` (K > 1) a failure on one rank aborts all of them, as `python -m mpi4py` does."""
    from . import distributed as dist
    return dist.run_or_abort(_main, argv)


def _main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, CheckpointError, backend.BackendError) as e:
        print(f"minclip: error: {e}", file=sys.stderr)  # errors for people: one line, no traceback
        return 1
    except KeyboardInterrupt as e:
        print(f"\nminclip: {e}" if str(e) else "\nminclip: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
