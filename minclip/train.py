"""Training: the contrastive pre-training loop of Section 2.5, sized for a laptop CPU.

`train(TrainConfig())` trains tiny-vit on the built-in Shapes dataset and
returns the final zero-shot accuracies; `minclip train` is the same from the
command line. Each step is Figure 3 of the paper followed by an AdamW update:

    I_f, T_f = encode_image(images), encode_text(tokens)   # projections inside
    loss = clip_loss(I_f, T_f, logit_scale)                 # symmetric cross-entropy
    loss.backward(); clip grads; optimizer.step()
    logit_scale = clamp(logit_scale, 0, ln 100)             # "clipped ... to prevent ... > 100"

A run folder (logs/NAME/) holds config.json, metrics.jsonl, checkpoints
(latest.npz, written atomically every epoch and on Ctrl-C) and the plots.
"""
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields

from . import backend
from . import distributed as dist
from .checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint


@dataclass
class TrainConfig:
    model: str = "tiny-vit"          # a config name from minclip/configs (minclip.model.list_models())
    dataset: str = "shapes"          # "shapes" (built in, procedural) or "csv" (open_clip's CSV format)
    train_data: str = None           # CSV of image paths and captions, for --dataset csv
    val_data: str = None             # optional CSV for retrieval evaluation, for --dataset csv
    csv_img_key: str = "filepath"    # CSV column holding image paths
    csv_caption_key: str = "title"   # CSV column holding captions
    csv_separator: str = "\t"        # CSV field separator (open_clip's default is a tab)
    train_size: int = 16384          # Shapes training pairs per epoch
    eval_size: int = 512             # Shapes images per zero-shot evaluation split
    epochs: int = 6                  # passes over the training set
    batch_size: int = 128            # pairs per step; the loss contrasts each pair with the other B-1
    lr: float = 1e-3                 # peak learning rate (small models take larger steps than the paper's 5e-4)
    wd: float = 0.1                  # AdamW decoupled weight decay (not on gains, biases, embeddings, logit_scale)
    warmup: int = 50                 # linear warm-up steps before the cosine decay
    grad_clip: float = 1.0           # global gradient-norm clip; 0 disables
    context_length: int = 16         # caption tokens per training example (Shapes captions need < 16)
    seed: int = 0                    # one seed fixes init, data order and hence the whole run
    workers: int = 2                 # background threads preparing batches
    backend: str = "numpy"           # "numpy" (CPU) or "cupy" (GPU)
    logs: str = "logs"               # parent folder of run folders
    name: str = None                 # run folder name; default: model-dataset-timestamp
    resume: str = None               # checkpoint to continue from (same config)
    pretrained: str = None           # checkpoint whose weights start a new run (fine-tuning)
    overfit_batch: int = 0           # >0: train on one fixed batch of this many pairs (sanity check)
    log_every: int = 10              # steps between metrics.jsonl lines
    progress: bool = True            # tqdm progress bars
    blas_threads: int = 0            # BLAS threads per process; 0: cores // processes (docs/distributed.md)


class TrainingDiverged(RuntimeError):
    pass


# ----------------------------------------------------------------------------- one step
def train_step(model, optimizer, images, tokens, grad_clip=1.0):
    """One optimisation step on a batch; returns (loss, grad_norm) as floats."""
    from .loss import clip_loss_global
    from .optim import clip_grad_norm_

    image_features = model.encode_image(images)      # I_f @ W_i   (B, embed_dim)
    text_features = model.encode_text(tokens)        # T_f @ W_t   (B, embed_dim)
    loss = clip_loss_global(image_features, text_features, model.logit_scale)  # = clip_loss on one process
    value = dist.average_scalar(float(loss.data))      # distributed: the global loss, the same on every rank
    if not math.isfinite(value):
        return value, float("nan")
    optimizer.zero_grad()
    loss.backward()
    dist.average_gradients(model.parameters())       # distributed: mean over ranks (no-op on one process)
    grad_norm = clip_grad_norm_(model.parameters(), grad_clip) if grad_clip else float("nan")
    optimizer.step()
    # Section 2.5: the temperature is "clipped to prevent scaling the logits by more than 100"
    t = model.logit_scale.data
    backend.get_array_module(t).clip(t, 0, math.log(100), out=t)  # in place: t stays a 0-d array
    return value, grad_norm


# ----------------------------------------------------------------------------- data
def build_data(cfg, image_size):
    """(train dataset, eval datasets dict) for the config."""
    from . import data
    if cfg.dataset == "shapes":
        train = data.Shapes("train", length=cfg.train_size, image_size=image_size, seed=cfg.seed)
        evals = {"val": data.Shapes("val", length=cfg.eval_size, image_size=image_size, seed=cfg.seed),
                 "heldout": data.Shapes("heldout", length=cfg.eval_size, image_size=image_size, seed=cfg.seed)}
        return train, evals
    if cfg.dataset == "csv":
        if not cfg.train_data:
            raise ValueError("--dataset csv needs --train-data PATH (a CSV of image paths and captions)")
        kw = dict(img_key=cfg.csv_img_key, caption_key=cfg.csv_caption_key, sep=cfg.csv_separator,
                  image_size=image_size)
        train = data.CsvImageText(cfg.train_data, **kw)
        evals = {"val": data.CsvImageText(cfg.val_data, **kw)} if cfg.val_data else {}
        return train, evals
    raise ValueError(f"unknown dataset {cfg.dataset!r}; choose 'shapes' or 'csv'")


class OneBatch:
    """The first `n` pairs of a dataset as a dataset: for --overfit-batch."""
    def __init__(self, dataset, n):
        self.items = [dataset[i] for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


# ----------------------------------------------------------------------------- evaluation during training
class ShapesLabels:
    """A Shapes split as (image, class index) pairs for one attribute: "shape", "colour" or "pair"."""
    def __init__(self, shapes, key):
        self.shapes, self.labels = shapes, shapes.labels(key)

    def __len__(self):
        return len(self.shapes)

    def __getitem__(self, i):
        return self.shapes[i][0], int(self.labels[i])


def shapes_zeroshot(model, evals, batch_size=256, details=None):
    """Zero-shot top-1 on Shapes: shape and colour on the val split, and colour-shape pairs on
    the held-out split, whose pairs never appear together in training (Section 3.1 style prompts).
    Each split is encoded once. `details`, if a dict, receives the full zero_shot_scores per key."""
    from . import data
    from .evaluate import encode_dataset, zero_shot_classifier, zero_shot_scores
    out, feats = {}, {}
    for key, split in (("shape", "val"), ("colour", "val"), ("pair", "heldout")):
        if split not in feats:
            loader = data.DataLoader(ShapesLabels(evals[split], "shape"), batch_size=batch_size)
            feats[split] = encode_dataset(model, loader, progress=False)[0]
        classnames = data.Shapes.classnames(key)
        clf = zero_shot_classifier(model, classnames, data.TEMPLATES[key])
        res = zero_shot_scores(feats[split], evals[split].labels(key), clf)
        name = "pair_heldout" if key == "pair" else key
        out[f"zeroshot/{name}_top1"] = res["top1"]
        out[f"zeroshot/{name}_chance"] = 1 / len(classnames)
        if details is not None:
            details[key] = res
    return out


def evaluate_during_training(model, evals, cfg, details):
    """Zero-shot accuracies on Shapes, or image<->text retrieval on the --val-data CSV."""
    if cfg.dataset == "shapes":
        return shapes_zeroshot(model, evals, details=details)
    from . import data
    from .evaluate import encode_dataset, retrieval_metrics
    from .tokenizer import tokenize_fn_for
    loader = data.DataLoader(evals["val"], batch_size=256,
                             tokenize_fn=tokenize_fn_for(model.vocab_size, model.context_length))
    image_features, text_features = encode_dataset(model, loader, what="both", progress=False)
    return {f"retrieval/{k}": v for k, v in retrieval_metrics(image_features, text_features).items()}


def shapes_plots(model, evals, run_dir, shape_confusion, n=8):
    """similarity.png (Figure 1's image-text matrix on n val pairs) and confusion.png (zero-shot shapes)."""
    import numpy as np

    from . import data
    from .autograd import no_grad
    from .plots import plot_confusion, plot_similarity
    from .tokenizer import tokenize_fn_for
    val = evals["val"]
    images = np.stack([val[i][0] for i in range(n)])
    captions = [val[i][1] for i in range(n)]
    model.eval()
    with no_grad():
        img = model.encode_image(images).numpy()
        txt = model.encode_text(tokenize_fn_for(model.vocab_size, model.context_length)(captions)).numpy()
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    sim_path = plot_similarity(np.stack([np.asarray(val.render(i)) for i in range(n)]), captions, txt @ img.T,
                               os.path.join(run_dir, "similarity.png"))
    conf_path = plot_confusion(shape_confusion, data.Shapes.classnames("shape"), os.path.join(run_dir, "confusion.png"))
    return [sim_path, conf_path]


# ----------------------------------------------------------------------------- the loop
def _run_dir(cfg):
    name = cfg.name or f"{cfg.model}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = os.path.join(cfg.logs, name)
    os.makedirs(os.path.join(path, "checkpoints"), exist_ok=True)
    return path


def train(cfg=None, on_step=None):
    """Train a CLIP; returns a dict with the run folder, final metrics and step count.

    on_step(step, loss, model): optional callback after every step (tests use it to interrupt a run).
    """
    from tqdm.auto import tqdm

    from . import data
    from .model import create_model
    from .optim import AdamW, CosineSchedule, param_groups_for_clip
    from .plots import plot_curves
    from .tokenizer import tokenize_fn_for

    cfg = cfg or TrainConfig()
    if cfg.batch_size < 2:
        raise ValueError(f"--batch-size {cfg.batch_size}: the contrastive loss needs at least 2 pairs per batch "
                         "(with one pair the only 'other' caption is itself, so the loss is identically zero)")
    if cfg.resume and cfg.pretrained:
        raise ValueError("use either --resume (continue a run) or --pretrained (start a new run from weights)")
    backend.use(cfg.backend)
    backend.manual_seed(cfg.seed)
    dist.set_blas_threads(cfg.blas_threads)

    model = create_model(cfg.model)
    image_size = model.visual.input_resolution
    train_set, evals = build_data(cfg, image_size)
    if cfg.overfit_batch:
        train_set = OneBatch(train_set, cfg.overfit_batch)
    batch_size = min(cfg.batch_size, len(train_set))
    loader = data.DataLoader(train_set, batch_size=batch_size, shuffle=True, seed=cfg.seed, drop_last=True,
                             num_workers=cfg.workers,
                             tokenize_fn=tokenize_fn_for(model.vocab_size, cfg.context_length))
    loader = dist.shard(loader)  # distributed: rank r's block of each global batch of K x batch_size
    global_batch = batch_size * dist.world_size()
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = AdamW(param_groups_for_clip(model, cfg.wd), lr=cfg.lr)
    schedule = CosineSchedule(optimizer, cfg.lr, cfg.warmup, total_steps)

    step, run_dir = 0, None
    if cfg.resume:
        model_state, state = load_checkpoint(cfg.resume)
        if state.get("config", {}).get("model") != cfg.model:
            raise CheckpointError(f"checkpoint {cfg.resume} was trained with model "
                                  f"{state.get('config', {}).get('model')!r}, not {cfg.model!r}")
        model.load_state_dict(model_state)
        optimizer.load_state_dict(state["optimizer"])
        step, run_dir = dist.resume_position(state, steps_per_epoch, global_batch), state.get("run_dir")
        backend.get_rng().bit_generator.state = state["rng"]
    elif cfg.pretrained:
        model.load_state_dict(load_weights(cfg.pretrained))
    dist.broadcast_model(model)  # distributed: every rank starts from rank 0's weights
    if dist.is_main():  # distributed: rank 0 alone writes the run folder
        run_dir = run_dir if run_dir and os.path.isdir(run_dir) else _run_dir(cfg)
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            json.dump(asdict(cfg), f, indent=2)
    run_dir = dist.from_main(run_dir)
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    ckpt_path = os.path.join(run_dir, "checkpoints", "latest.npz")

    def save():
        if not dist.is_main():
            return
        # epoch and epoch_samples let --resume continue at the same sample offset with another process count
        return save_checkpoint(ckpt_path, model.state_dict(), optimizer=optimizer.state_dict(), step=step,
                               epoch=step // steps_per_epoch, epoch_samples=step % steps_per_epoch * global_batch,
                               config=asdict(cfg), run_dir=run_dir, rng=backend.get_rng().bit_generator.state)

    def log(record):
        if not dist.is_main():
            return
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    model.train()
    results, details, loss = {}, {}, None
    t_start = time.time()
    try:
        for epoch in range(step // steps_per_epoch, cfg.epochs):
            start_batch = step - epoch * steps_per_epoch
            bar = tqdm(loader.iter_epoch(epoch, start_batch), total=steps_per_epoch, initial=start_batch,
                       desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=not (cfg.progress and dist.is_main()), leave=False)
            t_epoch, seen = time.time(), 0
            for images, tokens in bar:
                lr = schedule.step(step)
                loss, grad_norm = train_step(model, optimizer, images, tokens, cfg.grad_clip)
                if not math.isfinite(loss):
                    raise TrainingDiverged(f"loss became {loss} at step {step + 1}; stopped without saving, "
                                           f"the last good checkpoint is {ckpt_path}")
                step += 1
                seen += len(images) * dist.world_size()
                scale = math.exp(float(model.logit_scale.data))
                if step % cfg.log_every == 0 or step == total_steps:
                    ips = seen / max(time.time() - t_epoch, 1e-9)  # this epoch's average
                    log({"step": step, "epoch": epoch, "loss": loss, "logit_scale": scale, "lr": lr,
                         "grad_norm": grad_norm, "images_per_s": ips})
                    bar.set_postfix(loss=f"{loss:.3f}", scale=f"{scale:.1f}", lr=f"{lr:.2e}", img_s=f"{ips:.0f}")
                if on_step:
                    on_step(step, loss, model)
            bar.close()
            save()
            if evals and not cfg.overfit_batch and dist.is_main():  # distributed: rank 0 evaluates
                results = evaluate_during_training(model, evals, cfg, details)
                model.train()
                log({"step": step, "epoch": epoch + 1, **results})
                if cfg.progress:
                    print(f"epoch {epoch + 1}: loss {loss:.3f}  " + "  ".join(
                        f"{k.split('/')[1]} {v:.1%}" for k, v in results.items() if not k.endswith("_chance")))
    except KeyboardInterrupt:
        save()
        raise KeyboardInterrupt(f"interrupted at step {step}; checkpoint saved to {ckpt_path}; "
                                f"continue with --resume {ckpt_path}")
    if not dist.is_main():
        results.update(step=step, run_dir=run_dir, checkpoint=ckpt_path, final_loss=loss, plots=[],
                       wall_time_s=time.time() - t_start)
        return results
    results["plots"] = [plot_curves(metrics_path, os.path.join(run_dir, "curves.png"))]
    if "shape" in details:  # zero-shot evaluation ran (Shapes, not --overfit-batch)
        results["plots"] += shapes_plots(model, evals, run_dir, details["shape"]["confusion"])
    results.update(step=step, run_dir=run_dir, checkpoint=ckpt_path, final_loss=loss,
                   wall_time_s=time.time() - t_start)
    return results


def config_from_args(args):
    """A TrainConfig from an argparse namespace with matching (dash-to-underscore) names."""
    kw = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    return TrainConfig(**kw)

