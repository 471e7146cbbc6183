"""Training: the contrastive pre-training loop of Section 2.5, sized for a laptop CPU.

`train(TrainConfig())` trains tiny-vit on the built-in Shapes dataset and returns the final
zero-shot accuracies; `minclip train` is the same from the command line. Each step is Figure 3
of the paper followed by an AdamW update:

    I_f, T_f = encode_image(images), encode_text(tokens)   # projections inside
    loss = clip_loss(I_f, T_f, logit_scale)                 # symmetric cross-entropy
    loss.backward(); clip grads; optimizer.step()
    logit_scale = clamp(logit_scale, 0, ln 100)             # "clipped ... to prevent ... > 100"

The tokenizer belongs to the run (merges learnt on its captions, context of the longest caption).
A run folder logs/NAME/ holds config.json, bpe.txt.gz, metrics.jsonl, the plots and
checkpoints/latest.npz (weights, tokenizer, optimizer; written atomically every epoch and on Ctrl-C).
"""
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
from tqdm.auto import tqdm

from . import backend, data
from . import distributed as dist
from .checkpoint import checkpoint_tokenizer, read_checkpoint, save_checkpoint
from .evaluate import EVAL_BATCH_SIZE, encode_dataset, retrieval_metrics, shapes_plots, shapes_zeroshot
from .loss import MAX_LOGIT_SCALE, clip_loss_global
from .model import create_model
from .optim import AdamW, CosineSchedule, clip_grad_norm_, param_groups_for_clip
from .plots import plot_curves
from .tokenizer import (
    OPENAI_VOCAB_SIZE,
    SimpleTokenizer,
    get_tokenizer,
    learn_merges,
    shorten,
    token_lengths,
    write_merges,
)

# The default run: 4 epochs of 36,864 Shapes pairs (1,152 steps of 128). Measured with tiny-vit (zero-shot
# shape / colour / held-out pairs, 512 images each, one seed): 6 epochs of 16,384 (768 steps) 93.0 / 100 / 93.0 %;
# 9 epochs of 16,384 97.7 / 100 / 93.8 %; 4 epochs of 36,864 98.0 / 100 / 96.3 % (seed 1: 96.9 / 100 / 96.5 %);
# 3 epochs of 36,864 96.7 / 100 / 91.8 %. The held-out pairs need distinct images more than passes.
SHAPES_PAIRS = 36864  # Shapes training pairs per epoch, the default
PAIRS_PER_RUN = 4 * SHAPES_PAIRS  # what --epochs 0 aims for: the default run, 4 epochs of Shapes
# A CSV of one's own is usually small: random crops make each pass over it show new views, and more passes
# then keep helping. On 1,500 captioned digits (tests/digits_data.py, 500 unseen test images, tiny-vit):
# uncropped, 66 epochs 74.8 % zero-shot; crop 0.5, 66 epochs 87.2 %; crop 0.5, 100 epochs 96.6 % (5.1 min).
CSV_CROP_SCALE = 0.5  # --crop-scale for a CSV
CSV_PAIRS_PER_RUN = 150_000  # what --epochs 0 aims for with a CSV (100 epochs of 1,500 images)


def _opt(default, help, **argparse_kw):
    """A TrainConfig field with the help text of its --flag (cli.py builds the flags from the fields)."""
    return field(default=default, metadata=dict(help=help, **argparse_kw))


@dataclass
class TrainConfig:
    model: str = _opt("tiny-vit", "config name from minclip/configs, e.g. tiny-vit, tiny-rn, ViT-B-32")
    dataset: str = _opt("shapes", "built-in procedural Shapes, or a CSV of image paths and captions",
                        choices=["shapes", "csv"])
    train_data: str = _opt(None, "CSV of image paths and captions (--dataset csv)")
    val_data: str = _opt(None, "CSV for retrieval evaluation after each epoch (--dataset csv)")
    csv_img_key: str = _opt(data.CSV_IMG_KEY, "CSV column holding image paths")
    csv_caption_key: str = _opt(data.CSV_CAPTION_KEY, "CSV column holding captions")
    csv_separator: str = _opt(data.CSV_SEPARATOR, "CSV field separator (open_clip's default is a tab)")
    tokenizer: str = _opt(None, "BPE merges: learnt on the training captions unless 'openai', 'shapes' or a "
                                "merges file is named (a model with OpenAI's vocabulary uses 'openai')")
    context_length: int = _opt(0, "caption tokens per training example; 0: the longest training caption, "
                                  "capped at the model's context length")
    crop_scale: float = _opt(None, "each time a training image is seen, a random crop of this share of its area up "
                                   "to all of it (the paper's one augmentation); 1: none. Default: "
                                   f"{CSV_CROP_SCALE} for --dataset csv, 1 for Shapes, whose captions name positions "
                                   "that a crop would move")
    train_size: int = _opt(SHAPES_PAIRS, "Shapes training pairs per epoch")
    eval_size: int = _opt(512, "Shapes images per zero-shot evaluation split")
    epochs: int = _opt(0, f"passes over the training set; 0: enough to see about {PAIRS_PER_RUN:,} pairs "
                          f"({PAIRS_PER_RUN // SHAPES_PAIRS} for Shapes' {SHAPES_PAIRS:,}) or {CSV_PAIRS_PER_RUN:,} "
                          "from a CSV, so a small dataset gets as many steps as a large one")
    batch_size: int = _opt(128, "pairs per step; the loss contrasts each pair with the other B-1")
    lr: float = _opt(1e-3, "peak learning rate (small models take larger steps than the paper's 5e-4)")
    wd: float = _opt(0.1, "AdamW decoupled weight decay (not on gains, biases, embeddings, logit_scale)")
    warmup: int = _opt(50, "linear warm-up steps before the cosine decay")
    grad_clip: float = _opt(1.0, "global gradient-norm clip; 0 disables")
    cache_gb: float = _opt(2.0, "keep decoded, preprocessed training images in memory up to this many GB; 0: off")
    seed: int = _opt(0, "one seed fixes init, data order and hence the whole run")
    workers: int = _opt(2, "background threads preparing batches")
    backend: str = _opt(None, "numpy (CPU), cupy (GPU) or strict (CuPy's rules on the CPU); default: "
                              "MINCLIP_BACKEND, else numpy", choices=backend.NAMES)
    logs: str = _opt("logs", "parent folder of run folders")
    name: str = _opt(None, "run folder name; default: model-dataset-timestamp")
    resume: str = _opt(None, "checkpoint to continue from (same config)")
    pretrained: str = _opt(None, "weights that start a new run (fine-tuning); their tokenizer comes along")
    overfit_batch: int = _opt(0, "sanity check: train on one fixed batch of N pairs; the loss must fall towards 0",
                              metavar="N")
    log_every: int = _opt(10, "steps between metrics.jsonl lines")
    progress: bool = _opt(True, "tqdm progress bars and per-epoch lines")
    blas_threads: int = _opt(0, "BLAS threads per process; 0: cores // processes (docs/distributed.md)", metavar="N")


class TrainingDiverged(RuntimeError):
    pass


# ----------------------------------------------------------------------------- one step
def train_step(model, optimizer, images, tokens, grad_clip=1.0):
    """One optimisation step on a batch; returns (loss, grad_norm) as 0-d arrays on the model's device.

    Nothing is read back to the host here: on a GPU the whole step is queued and the host never waits.
    The caller reads the loss (read_step_values: one transfer) and stops the run if it is not finite.
    grad_clip 0: no clipping (the norm is still measured)."""
    image_features = model.encode_image(images)      # I_f @ W_i   (B, embed_dim)
    text_features = model.encode_text(tokens)        # T_f @ W_t   (B, embed_dim)
    loss = clip_loss_global(image_features, text_features, model.logit_scale)  # = clip_loss on one process
    optimizer.zero_grad()
    loss.backward()
    dist.average_gradients(model.parameters())       # distributed: mean over ranks (no-op on one process)
    grad_norm = clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    optimizer.step()
    # Section 2.5: the temperature is "clipped to prevent scaling the logits by more than 100"
    t = model.logit_scale.data
    backend.get_array_module(t).clip(t, 0, math.log(MAX_LOGIT_SCALE), out=t)  # in place: stays a 0-d array
    return loss.data, grad_norm


def read_step_values(loss, logit_scale, grad_norm):
    """(loss, exp(t), grad_norm) as floats, in one device-to-host transfer: the step's one sync.
    Distributed: the loss is averaged over the ranks (the same value on every rank)."""
    xp = backend.get_array_module(loss)
    values = backend.to_numpy(xp.stack([v.astype(np.float32) for v in (loss, logit_scale, grad_norm)]))
    return dist.average_scalar(float(values[0])), math.exp(float(values[1])), float(values[2])


# ----------------------------------------------------------------------------- data
def build_data(cfg, image_size):
    """(train dataset, eval datasets dict) for the config (crop_scale already chosen: a number)."""
    if cfg.dataset == "shapes":
        train = data.Shapes("train", length=cfg.train_size, image_size=image_size, seed=cfg.seed,
                            transform=data.train_transform(image_size, cfg.crop_scale) if cfg.crop_scale < 1 else None)
        evals = {"val": data.Shapes("val", length=cfg.eval_size, image_size=image_size, seed=cfg.seed),
                 "heldout": data.Shapes("heldout", length=cfg.eval_size, image_size=image_size, seed=cfg.seed)}
        return train, evals
    if cfg.dataset == "csv":
        if not cfg.train_data:
            raise ValueError("--dataset csv needs --train-data PATH (a CSV of image paths and captions)")
        kw = dict(img_key=cfg.csv_img_key, caption_key=cfg.csv_caption_key, sep=cfg.csv_separator,
                  image_size=image_size)
        train = data.CsvImageText(cfg.train_data, transform=data.train_transform(image_size, cfg.crop_scale), **kw)
        _check_images_exist(train)
        evals = {"val": data.CsvImageText(cfg.val_data, **kw)} if cfg.val_data else {}
        return train, evals
    raise ValueError(f"unknown dataset {cfg.dataset!r}; choose 'shapes' or 'csv'")


def _check_images_exist(dataset):
    """Fail at once, in one line, when no image listed in a CSV exists; when some are missing, leave
    them out and say so once (not once per epoch)."""
    n = len(dataset.images)
    missing = dataset.drop_missing()
    if not dataset.images:
        raise ValueError(f"none of the {n} images listed in {dataset.path} exists (first: {missing[0]}); "
                         "image paths are read relative to the CSV file's folder")
    if missing:
        warnings.warn(f"{len(missing)} of the {n} images listed in {dataset.path} do not exist and are left out "
                      f"(first: {missing[0]})", stacklevel=2)


def captions_of(dataset):
    """Every caption of a captioned dataset, without loading any image."""
    if isinstance(dataset, data.Shapes):
        return [dataset.caption(i) for i in range(len(dataset))]
    return list(dataset.captions)


class OneBatch:
    """The first `n` pairs of a dataset as a dataset: for --overfit-batch."""
    def __init__(self, dataset, n):
        self.items = [dataset[i] for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


# ----------------------------------------------------------------------------- the run's tokenizer
def build_tokenizer(cfg, model, captions, stored=None):
    """The run's tokenizer, its trained_length set from the captions.

    stored (from --resume or --pretrained weights) wins: a model keeps the vocabulary it learnt.
    Otherwise --tokenizer names one; otherwise OpenAI's merges for OpenAI's vocabulary and, for every
    other model, merges learnt on the training captions up to the model's vocab_size.
    """
    if stored is not None:
        tok = stored
    elif cfg.tokenizer:
        tok = get_tokenizer(cfg.tokenizer)
    elif model.vocab_size == OPENAI_VOCAB_SIZE:
        tok = get_tokenizer("openai")
    else:
        tok = SimpleTokenizer(merges=learn_merges(captions, model.vocab_size))
    if tok.vocab_size > model.vocab_size:
        raise ValueError(f"tokenizer {cfg.tokenizer or 'learnt'} has {tok.vocab_size} ids but model {cfg.model} "
                         f"has {model.vocab_size} token embeddings; use a smaller merges file or a larger vocab_size")
    if cfg.resume and stored is not None and stored.trained_length:
        length = stored.trained_length
    else:
        length = context_length_for(cfg, model, tok, captions)
    return SimpleTokenizer(merges=tok.merges, trained_length=length)  # a copy: shared tokenizers stay as they are


def context_length_for(cfg, model, tokenizer, captions):
    """--context-length, or the longest tokenized caption (SOT and EOT included), capped at the model's
    context length; the captions still cut are reported once, with an example."""
    lengths = token_lengths(captions, tokenizer)
    length = cfg.context_length or int(lengths.max(initial=2))
    length = min(length, model.context_length)
    cut = lengths > length
    if cut.any():
        i = int(cut.argmax())
        warnings.warn(f"{int(cut.sum())} of {len(captions)} training captions are longer than {length} tokens and "
                      f"are cut at the end, e.g. {shorten(captions[i])!r} ({lengths[i]} tokens)", stacklevel=2)
    return length


# ----------------------------------------------------------------------------- evaluation during training
def evaluate_during_training(model, tokenizer, evals, cfg, details):
    """Zero-shot accuracies on Shapes, or image<->text retrieval on the --val-data CSV."""
    if cfg.dataset == "shapes":
        return shapes_zeroshot(model, evals, tokenizer, details=details)
    loader = data.DataLoader(evals["val"], batch_size=EVAL_BATCH_SIZE,
                             tokenize_fn=lambda texts: tokenizer(texts, tokenizer.trained_length))
    image_features, text_features = encode_dataset(model, loader, what="both", progress=False)
    return {f"retrieval/{k}": v for k, v in retrieval_metrics(image_features, text_features).items()}


# ----------------------------------------------------------------------------- the loop
def _run_dir(cfg):
    name = cfg.name or f"{cfg.model}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = os.path.join(cfg.logs, name)
    os.makedirs(os.path.join(path, "checkpoints"), exist_ok=True)
    return path


def _check_config(cfg):
    if cfg.batch_size < 2:
        raise ValueError(f"--batch-size {cfg.batch_size}: the contrastive loss needs at least 2 pairs per batch "
                         "(with one pair the only 'other' caption is itself, so the loss is identically zero)")
    if cfg.resume and cfg.pretrained:
        raise ValueError("use either --resume (continue a run) or --pretrained (start a new run from weights)")
    if cfg.crop_scale is not None and not 0 < cfg.crop_scale <= 1:
        raise ValueError(f"--crop-scale {cfg.crop_scale}: the smallest share of an image that a crop keeps, in (0, 1]; "
                         "1 turns cropping off")


def train(cfg=None, on_step=None):
    """Train a CLIP; returns a dict with the run folder, checkpoint, final metrics and step count.

    on_step(step, loss, model): optional callback after every step (tests use it to interrupt a run).
    """
    cfg = cfg or TrainConfig()
    _check_config(cfg)
    if cfg.backend:
        backend.use(cfg.backend)
    backend.manual_seed(cfg.seed)
    dist.set_blas_threads(cfg.blas_threads)
    backend.keep_freed_memory()
    model = create_model(cfg.model)
    if cfg.crop_scale is None:
        cfg = replace(cfg, crop_scale=CSV_CROP_SCALE if cfg.dataset == "csv" else 1.0)
    train_set, evals = build_data(cfg, model.visual.input_resolution)

    resumed = read_checkpoint(cfg.resume) if cfg.resume else None
    if resumed and resumed[1].get("config", {}).get("model") != cfg.model:
        raise ValueError(f"checkpoint {cfg.resume} was trained with model "
                              f"{resumed[1].get('config', {}).get('model')!r}, not {cfg.model!r}")
    pretrained = read_checkpoint(cfg.pretrained) if cfg.pretrained else None
    stored = None
    if resumed or pretrained:  # the weights' own tokenizer, or the one assumed for them
        state, path = (resumed[1], cfg.resume) if resumed else (pretrained[1], cfg.pretrained)
        stored = checkpoint_tokenizer(state, model.vocab_size, path)
    tokenizer = build_tokenizer(cfg, model, captions_of(train_set), stored)

    if not cfg.epochs:
        pairs = CSV_PAIRS_PER_RUN if cfg.dataset == "csv" else PAIRS_PER_RUN
        cfg = replace(cfg, epochs=max(1, round(pairs / len(train_set))))
    if cfg.overfit_batch:
        train_set = OneBatch(train_set, cfg.overfit_batch)
    elif cfg.cache_gb > 0 and not data.transforms.wants_rng(getattr(train_set, "transform", None)):
        train_set = data.InMemory(train_set, max_bytes=int(cfg.cache_gb * 2 ** 30))
    batch_size = min(cfg.batch_size, len(train_set) // dist.world_size())
    loader = data.DataLoader(train_set, batch_size=batch_size, shuffle=True, seed=cfg.seed, drop_last=True,
                             num_workers=cfg.workers,
                             tokenize_fn=lambda texts: tokenizer(texts, tokenizer.trained_length))
    loader = dist.shard(loader)  # distributed: rank r's block of each global batch of K x batch_size
    optimizer = AdamW(param_groups_for_clip(model, cfg.wd), lr=cfg.lr)
    schedule = CosineSchedule(optimizer, cfg.lr, cfg.warmup, len(loader) * cfg.epochs)

    step, run_dir = 0, None
    if resumed:
        model.load_state_dict(resumed[0])
        optimizer.load_state_dict(resumed[1]["optimizer"])
        step = dist.resume_position(resumed[1], len(loader), batch_size * dist.world_size())
        run_dir = resumed[1].get("run_dir")
        backend.get_rng().bit_generator.state = resumed[1]["rng"]
    elif pretrained:
        model.load_state_dict(pretrained[0])
    dist.broadcast_model(model)  # distributed: every rank starts from rank 0's weights
    if dist.is_main():  # distributed: rank 0 alone writes the run folder
        run_dir = run_dir if run_dir and os.path.isdir(run_dir) else _run_dir(cfg)
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            json.dump(asdict(cfg), f, indent=2)
        write_merges(tokenizer.merges, os.path.join(run_dir, "bpe.txt.gz"))
    run_dir = dist.from_main(run_dir)
    run = _Run(cfg, model, tokenizer, optimizer, schedule, loader, run_dir, step)
    return run.fit(evals, on_step)


class _Run:
    """The state of one training run and the loop over its epochs."""
    def __init__(self, cfg, model, tokenizer, optimizer, schedule, loader, run_dir, step):
        self.cfg, self.model, self.tokenizer, self.optimizer = cfg, model, tokenizer, optimizer
        self.schedule, self.loader, self.run_dir, self.step = schedule, loader, run_dir, step
        self.metrics_path = os.path.join(run_dir, "metrics.jsonl")
        self.ckpt_path = os.path.join(run_dir, "checkpoints", "latest.npz")

    def save(self):
        if not dist.is_main():
            return
        # epoch and epoch_samples let --resume continue at the same sample offset with another process count
        steps_per_epoch, global_batch = len(self.loader), self.loader.batch_size * dist.world_size()
        return save_checkpoint(self.ckpt_path, self.model.state_dict(), tokenizer=self.tokenizer,
                               optimizer=self.optimizer.state_dict(), step=self.step, config=asdict(self.cfg),
                               run_dir=self.run_dir, rng=backend.get_rng().bit_generator.state,
                               epoch=self.step // steps_per_epoch,
                               epoch_samples=self.step % steps_per_epoch * global_batch)

    def log(self, record):
        if not dist.is_main():
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def fit(self, evals, on_step):
        cfg, steps_per_epoch = self.cfg, len(self.loader)
        if dist.is_main():
            open(self.metrics_path, "a").close()  # exists from the start, even if no step gets logged
        self.model.train()
        results, details, loss = {}, {}, None
        t_start = time.time()
        try:
            for epoch in range(self.step // steps_per_epoch, cfg.epochs):
                loss = self.train_epoch(epoch, on_step)
                self.save()
                if evals and not cfg.overfit_batch and dist.is_main():  # distributed: rank 0 evaluates
                    results = evaluate_during_training(self.model, self.tokenizer, evals, cfg, details)
                    self.model.train()
                    self.log({"step": self.step, "epoch": epoch + 1, "elapsed_s": round(time.time() - t_start, 1),
                              **results})
                    if cfg.progress:
                        print(f"epoch {epoch + 1}: loss {loss:.3f}  " + "  ".join(
                            f"{k.split('/')[1]} {v:.1%}" for k, v in results.items() if not k.endswith("_chance")))
        except KeyboardInterrupt:
            self.save()
            raise KeyboardInterrupt(f"interrupted at step {self.step}; checkpoint saved to {self.ckpt_path}; "
                                    f"continue with --resume {self.ckpt_path}")
        if not dist.is_main():
            results.update(step=self.step, run_dir=self.run_dir, checkpoint=self.ckpt_path, final_loss=loss, plots=[],
                           wall_time_s=time.time() - t_start)
            return results
        results["plots"] = [plot_curves(self.metrics_path, os.path.join(self.run_dir, "curves.png"))]
        if "shape" in details:  # zero-shot evaluation ran (Shapes, not --overfit-batch)
            results["plots"] += shapes_plots(self.model, self.tokenizer, evals["val"], self.run_dir,
                                             details["shape"]["confusion"])
        results.update(step=self.step, run_dir=self.run_dir, checkpoint=self.ckpt_path, final_loss=loss,
                       wall_time_s=time.time() - t_start)
        return results

    def train_epoch(self, epoch, on_step):
        """One pass over the loader from where the run stands; returns the last loss."""
        cfg, model, steps_per_epoch = self.cfg, self.model, len(self.loader)
        total_steps = steps_per_epoch * cfg.epochs
        start_batch = self.step - epoch * steps_per_epoch
        bar = tqdm(self.loader.iter_epoch(epoch, start_batch), total=steps_per_epoch, initial=start_batch,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and dist.is_main()), leave=False)
        t_epoch, seen, loss, skipped = time.time(), 0, None, self.loader.skipped
        for images, tokens in bar:
            if len(images) < 2:  # unreadable images left one pair: no negatives, nothing to learn from it
                self.step += 1
                continue
            lr = self.schedule.step(self.step)
            step_values = train_step(model, self.optimizer, images, tokens, cfg.grad_clip)
            loss, scale, grad_norm = read_step_values(step_values[0], model.logit_scale.data, step_values[1])
            if not math.isfinite(loss):
                raise TrainingDiverged(f"loss became {loss} at step {self.step + 1}; stopped without saving, "
                                       f"the last good checkpoint is {self.ckpt_path}")
            self.step += 1
            seen += len(images) * dist.world_size()
            if self.step % cfg.log_every == 0 or self.step == total_steps:
                ips = seen / max(time.time() - t_epoch, 1e-9)  # this epoch's average
                self.log({"step": self.step, "epoch": epoch, "loss": loss, "logit_scale": scale, "lr": lr,
                          "grad_norm": grad_norm, "images_per_s": ips})
                bar.set_postfix(loss=f"{loss:.3f}", scale=f"{scale:.1f}", lr=f"{lr:.2e}", img_s=f"{ips:.0f}")
            if on_step:
                on_step(self.step, loss, model)
        bar.close()
        self.step = (epoch + 1) * steps_per_epoch  # every batch position used, batches of unreadable images too
        if seen == 0 and start_batch < steps_per_epoch:
            bad = self.loader.skipped - skipped
            raise ValueError(f"no training batch could be built in epoch {epoch + 1}: {bad} of "
                             f"{len(self.loader.dataset)} images could not be read (see the warning above)")
        return loss


def config_from_args(args):
    """A TrainConfig from an argparse namespace with matching (dash-to-underscore) names."""
    kw = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    return TrainConfig(**kw)
