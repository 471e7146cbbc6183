"""Time to accuracy on a small captioned dataset of one's own: minclip vs PyTorch, same data, recipe and weights.

    python tests/benchmarks/bench_small_data.py [--n-train 1500 --epochs 15 --batch-size 128 --lr 5e-4]

Writes the digits dataset of tests/digits_data.py (ordinary captions with words Shapes never uses, the
class word at the end of long ones) as a CSV in open_clip's format, trains minclip through the CSV path
(`minclip.train.train`: BPE merges learnt on the captions, context length from the data), then, when
torch is installed, OpenAI's model in PyTorch (tests/torch_reference.py) from the same initial weights on
the same token ids, batches, learning-rate schedule and AdamW groups. Prints the wall time and the
zero-shot top-1 on held-out images of each, classified from prompts alone.
"""
import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the dataset and the PyTorch reference
from digits_data import CLASSES, make_digits  # noqa: E402

import minclip  # noqa: E402
from minclip import backend, data  # noqa: E402
from minclip.evaluate import normalize_rows, zero_shot_classifier, zero_shot_eval  # noqa: E402
from minclip.model import create_model  # noqa: E402
from minclip.optim import cosine_lr, param_groups_for_clip  # noqa: E402
from minclip.train import TrainConfig, train  # noqa: E402

TEMPLATES = ["a photo of the number {}.", "a scan of a handwritten {}"]


def minclip_run(train_csv, test_dir, args, logs):
    t = time.perf_counter()
    res = train(TrainConfig(dataset="csv", train_data=train_csv, model=args.model, epochs=args.epochs,
                            batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, logs=logs, name="minclip",
                            progress=False))
    seconds = time.perf_counter() - t
    model, _ = minclip.load(res["checkpoint"])
    tokenizer = model.tokenizer
    test = data.ImageFolder(test_dir, image_size=model.visual.input_resolution)
    accs = {}
    for template in TEMPLATES:
        clf = zero_shot_classifier(model, test.classes, [template], tokenizer=tokenizer)
        accs[template] = zero_shot_eval(model, data.DataLoader(test, batch_size=256), clf, progress=False)["top1"]
    return seconds, accs, tokenizer


def torch_run(train_csv, test_dir, args, tokenizer):
    """The same run in PyTorch: same initial weights, token ids, batch order, schedule, groups and clipping."""
    import torch
    from torch_reference import clip_from_minclip, torch_loss
    backend.manual_seed(0)  # minclip.train seeds the same way before create_model: identical initial weights
    init = create_model(args.model)
    length = tokenizer.trained_length
    tmodel = clip_from_minclip(init, context_length=length).train()
    named = dict(tmodel.named_parameters())
    groups = [{"params": [named[n] for n in g["param_names"]], "weight_decay": g["weight_decay"]}
              for g in param_groups_for_clip(init, 0.1)]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    ds = data.CsvImageText(train_csv, image_size=init.visual.input_resolution)
    loader = data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, seed=0, drop_last=True, num_workers=2,
                             tokenize_fn=lambda texts: tokenizer(texts, length))
    total = len(loader) * args.epochs
    t, step = time.perf_counter(), 0
    for epoch in range(args.epochs):
        for images, tokens in loader.iter_epoch(epoch):
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, args.lr, args.warmup, total)
            logits_per_image, _ = tmodel(torch.from_numpy(images), torch.from_numpy(tokens))
            loss = torch_loss(logits_per_image)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tmodel.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                tmodel.logit_scale.clamp_(0, math.log(100))
            step += 1
    seconds = time.perf_counter() - t

    tmodel.eval()
    test = data.ImageFolder(test_dir, image_size=init.visual.input_resolution)
    images, labels = map(np.concatenate, zip(*data.DataLoader(test, batch_size=256)))
    accs = {}
    with torch.no_grad():
        img = normalize_rows(tmodel.encode_image(torch.from_numpy(images)).numpy())
        for template in TEMPLATES:
            tokens = tokenizer([template.format(c) for c in test.classes], length)
            txt = normalize_rows(tmodel.encode_text(torch.from_numpy(tokens)).numpy())
            accs[template] = float(((img @ txt.T).argmax(1) == labels).mean())
    return seconds, accs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=1500)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--model", default="tiny-vit")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        train_csv, test_dir = make_digits(root, args.n_train, args.n_test)
        print(f"digits: {args.n_train} captioned training images, {args.n_test} test images of {len(CLASSES)} "
              f"classes; {args.model}, {args.epochs} epochs, batch {args.batch_size}, lr {args.lr}")
        rows = [("minclip", *minclip_run(train_csv, test_dir, args, root)[:2])]
        tokenizer = minclip.load(str(Path(root, "minclip", "checkpoints", "latest.npz")))[0].tokenizer
        try:
            import torch  # noqa: F401
            if not args.no_torch:
                rows.append(("pytorch", *torch_run(train_csv, test_dir, args, tokenizer)))
        except ImportError:
            print("torch not installed: no side-by-side comparison")
    print(f"{'':8s} {'seconds':>8s}  " + "  ".join(f"top-1 '{t}'" for t in TEMPLATES))
    for name, seconds, accs in rows:
        print(f"{name:8s} {seconds:8.1f}  " + "  ".join(f"{accs[t]:>{len(t) + 8}.1%}" for t in TEMPLATES))
    return rows


if __name__ == "__main__":
    main()
