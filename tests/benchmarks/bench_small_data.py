"""Time to accuracy on a small captioned dataset of one's own: minclip vs PyTorch, same data, recipe and weights.

    python tests/benchmarks/bench_small_data.py [--data digits|patterns] [--epochs 15 --lr 5e-4 --crop-scale 1 ...]

Writes a captioned dataset as a CSV in open_clip's format: the digits of tests/digits_data.py (ordinary
captions with words Shapes never uses, the class word at the end of long ones) or the textures of
tests/patterns_data.py (class word in the middle). Trains minclip through the CSV path
(`minclip.train.train`: BPE merges learnt on the captions, context length from the data) with
minclip's own defaults unless a flag says otherwise (epochs, learning rate, crop scale: what
`minclip train --dataset csv` would pick), then, when torch is installed, OpenAI's model in PyTorch
(tests/torch_reference.py) from the same initial weights on the same token ids, image crops, batches,
learning-rate schedule and AdamW groups. Prints the wall time and the zero-shot top-1 on held-out
images of each, classified from prompts alone: a prompt no caption uses, a training caption's form,
and the ensemble of both (their embeddings averaged, Sec. 3.1.4).
"""
import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the datasets and the PyTorch reference
import digits_data  # noqa: E402
import patterns_data  # noqa: E402

import minclip  # noqa: E402
from minclip import backend, data  # noqa: E402
from minclip.evaluate import normalize_rows, zero_shot_classifier, zero_shot_eval  # noqa: E402
from minclip.model import create_model  # noqa: E402
from minclip.optim import cosine_lr, param_groups_for_clip  # noqa: E402
from minclip.train import TrainConfig, train  # noqa: E402

DATASETS = {  # maker, class names, (a prompt no caption uses, a training caption's form)
    "digits": (digits_data.make_digits, digits_data.CLASSES,
               ["a photo of the number {}.", "a scan of a handwritten {}"]),
    "patterns": (patterns_data.make_patterns, patterns_data.CLASSES,
                 ["a photo of a {} pattern.", "a swatch of {} fabric"]),
}
RECIPE = ("model", "epochs", "batch_size", "lr", "warmup", "crop_scale", "seed")  # TrainConfig flags, when given


def prompt_sets(templates):
    return {t: [t] for t in templates} | {"ensemble": templates}


def minclip_run(train_csv, test_dir, args, logs):
    """Train with minclip's defaults except the recipe flags given; returns seconds, accuracies, the run's config."""
    recipe = {k: getattr(args, k) for k in RECIPE if getattr(args, k) is not None}
    t = time.perf_counter()
    res = train(TrainConfig(dataset="csv", train_data=train_csv, logs=logs, name="minclip", progress=False, **recipe))
    seconds = time.perf_counter() - t
    config = json.loads(Path(logs, "minclip", "config.json").read_text())  # the epochs and crops it chose
    model, _ = minclip.load(res["checkpoint"])
    test = data.ImageFolder(test_dir, image_size=model.visual.input_resolution)
    accs = {}
    for name, templates in prompt_sets(args.templates).items():
        clf = zero_shot_classifier(model, test.classes, templates, tokenizer=model.tokenizer)
        accs[name] = zero_shot_eval(model, data.DataLoader(test, batch_size=256), clf, progress=False)["top1"]
    return seconds, accs, config


def torch_run(train_csv, test_dir, config, tokenizer):
    """The same run in PyTorch: same initial weights, token ids, crops, batch order, schedule, groups and clipping."""
    import torch
    from torch_reference import clip_from_minclip, torch_loss
    backend.manual_seed(config["seed"])  # minclip.train seeds the same way before create_model: identical weights
    init = create_model(config["model"])
    length = tokenizer.trained_length
    tmodel = clip_from_minclip(init, context_length=length).train()
    named = dict(tmodel.named_parameters())
    groups = [{"params": [named[n] for n in g["param_names"]], "weight_decay": g["weight_decay"]}
              for g in param_groups_for_clip(init, config["wd"])]
    lr, warmup, epochs = config["lr"], config["warmup"], config["epochs"]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)
    n_px = init.visual.input_resolution
    ds = data.CsvImageText(train_csv, image_size=n_px, transform=data.train_transform(n_px, config["crop_scale"]))
    loader = data.DataLoader(ds, batch_size=config["batch_size"], shuffle=True, seed=config["seed"], drop_last=True,
                             num_workers=2, tokenize_fn=lambda texts: tokenizer(texts, length))
    total = len(loader) * epochs
    t, step = time.perf_counter(), 0
    for epoch in range(epochs):
        for images, tokens in loader.iter_epoch(epoch):
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, lr, warmup, total)
            logits_per_image, _ = tmodel(torch.from_numpy(images), torch.from_numpy(tokens))
            loss = torch_loss(logits_per_image)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tmodel.parameters(), config["grad_clip"] or math.inf)
            opt.step()
            with torch.no_grad():
                tmodel.logit_scale.clamp_(0, math.log(100))
            step += 1
    seconds = time.perf_counter() - t

    tmodel.eval()
    test = data.ImageFolder(test_dir, image_size=n_px)
    images, labels = map(np.concatenate, zip(*data.DataLoader(test, batch_size=256)))
    accs = {}
    with torch.no_grad():
        img = normalize_rows(tmodel.encode_image(torch.from_numpy(images)).numpy())
        for name, templates in prompt_sets(config["templates"]).items():
            txt = 0
            for template in templates:  # the ensemble: normalised embeddings averaged, then normalised
                tokens = tokenizer([template.format(c) for c in test.classes], length)
                txt = txt + normalize_rows(tmodel.encode_text(torch.from_numpy(tokens)).numpy())
            accs[name] = float(((img @ normalize_rows(txt).T).argmax(1) == labels).mean())
    return seconds, accs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=sorted(DATASETS), default="digits")
    p.add_argument("--n-train", type=int, default=1500)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--model", help="default: minclip train's")
    p.add_argument("--epochs", type=int, help="default: minclip train's rule (--epochs 0)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup", type=int)
    p.add_argument("--crop-scale", type=float, help="default: minclip train's for a CSV")
    p.add_argument("--seed", type=int, help="the run's seed (init, batch order, crops); the data stay the same")
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args(argv)
    make, classes, args.templates = DATASETS[args.data]
    with tempfile.TemporaryDirectory() as root:
        train_csv, test_dir = make(root, args.n_train, args.n_test)
        seconds, accs, config = minclip_run(train_csv, test_dir, args, root)
        config["templates"] = args.templates
        print(f"{args.data}: {args.n_train} captioned training images, {args.n_test} test images of "
              f"{len(classes)} classes; {config['model']}, {config['epochs']} epochs, batch {config['batch_size']}, "
              f"lr {config['lr']}, crop scale {config['crop_scale']}, seed {config['seed']}")
        rows = [("minclip", seconds, accs)]
        tokenizer = minclip.load(str(Path(root, "minclip", "checkpoints", "latest.npz")))[0].tokenizer
        try:
            import torch  # noqa: F401
            if not args.no_torch:
                rows.append(("pytorch", *torch_run(train_csv, test_dir, config, tokenizer)))
        except ImportError:
            print("torch not installed: no side-by-side comparison")
    names = list(prompt_sets(args.templates))
    print(f"{'':8s} {'seconds':>8s}  " + "  ".join(f"top-1 '{n}'" for n in names))
    for name, seconds, accs in rows:
        print(f"{name:8s} {seconds:8.1f}  " + "  ".join(f"{accs[n]:>{len(n) + 8}.1%}" for n in names))
    return rows


if __name__ == "__main__":
    main()
