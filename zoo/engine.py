"""The one training loop for every model: optimisers, schedules, checkpoints/resume, DDP, logging."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import Augment, Loader, open_split
from .data.cache import partial_splits
from .data.specs import DATASETS, flips_keep_labels
from .errors import ZooError
from .evaluation import evaluate
from .io import atomic_write, remove_stale_temps
from .meta import WeightsMeta
from .pretrained import load
from .recipes import Recipe, default_recipe, get_recipe
from .registry import create_model, init_weights
from .report import plot_curves
from .weights import save_weights


class NaNLossError(ZooError):
    pass


MAX_SEED = 2**32 - 1  # what numpy's and torch's generators both accept


@dataclass
class TrainResult:
    model: nn.Module
    out_dir: Path
    weights: Path
    history: list[dict]
    test: Any  # EvalResult
    train_seconds: float


class WeightEMA:
    """An exponential moving average of a model's weights and of its float buffers (BatchNorm statistics, so the
    average evaluates as it is, with no re-estimation pass): after each optimiser step,
    avg <- decay * avg + (1 - decay) * current. It starts as a copy of the model; 1 / (1 - decay) steps is its
    time constant. Integer buffers (BatchNorm's step count) are copied."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @staticmethod
    def _tensors(m: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        ts = [*m.parameters(), *m.buffers()]
        return [t for t in ts if t.is_floating_point()], [t for t in ts if not t.is_floating_point()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        (avg, avg_int), (cur, cur_int) = self._tensors(self.module), self._tensors(model)
        torch._foreach_lerp_(avg, [t.detach() for t in cur], 1.0 - self.decay)  # one fused kernel, not a loop
        for a, c in zip(avg_int, cur_int):
            a.copy_(c)


def _dist() -> tuple[int, int, bool]:
    """(rank, world size, whether this call opened the process group, so the run must close it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    opened = world > 1 and not torch.distributed.is_initialized()
    if opened:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank(), world, opened) if world > 1 else (0, 1, False)


def git_commit() -> str:
    """HEAD of the source checkout, or $ZOO_COMMIT where the tree has no .git (a copy sent to a GPU machine)."""
    if os.environ.get("ZOO_COMMIT"):
        return os.environ["ZOO_COMMIT"]
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        return out if len(out) == 40 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def lr_factor(rec: Recipe, step: int, total: int, steps_per_epoch: int) -> float:
    """Multiplier of the base LR at optimizer step `step` (a pure function: resumes exactly)."""
    warm = rec.warmup_epochs * steps_per_epoch
    if warm and step < warm:
        return (step + 1) / warm
    if rec.schedule == "constant":
        return 1.0
    if rec.schedule == "step":
        return rec.gamma ** (step // max(1, rec.step_epochs * steps_per_epoch))
    t = (step - warm) / max(1, total - warm)
    if rec.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    # onecycle (Recipe has validated the name): linear up for 25%, linear down to ~0
    peak = 0.25
    return 0.1 + 0.9 * step / (peak * total) if step < peak * total else max(0.0, (total - step) / ((1 - peak) * total))


def make_optimizer(rec: Recipe, model: nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    # No weight decay on BatchNorm and biases: "L2" means the weights.
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": rec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if rec.optimizer == "adam":
        return torch.optim.Adam(groups, lr=rec.lr, fused=fused or None)
    if rec.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=rec.lr, fused=fused or None)
    # sgd (Recipe has validated the name)
    return torch.optim.SGD(groups, lr=rec.lr, momentum=rec.momentum, nesterov=rec.nesterov, fused=fused or None)


def split_indices(n_labels: np.ndarray, rec: Recipe, seed: int, train_subset: int | None):
    """Deterministic train/validation split of the train set, and the optional N-per-class subset."""
    labels = n_labels
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(len(labels))
    n_val = int(round(len(labels) * rec.val_fraction))
    val, train = np.sort(order[:n_val]), order[n_val:]
    if train_subset:
        keep = [train[labels[train] == c][:train_subset] for c in np.unique(labels)]
        train = np.concatenate(keep)
    return np.sort(train), val


def build_model(name_or_model, dataset: str, classes: list[str], shape, rec: Recipe, init: str | None,
                train_last: int | None) -> tuple[nn.Module, str]:
    h, w, c = shape
    if isinstance(name_or_model, nn.Module):
        model, name = name_or_model, getattr(name_or_model, "zoo_name", type(name_or_model).__name__)
    else:
        name = name_or_model
        model = create_model(name, dataset=dataset if dataset in DATASETS else None, num_classes=len(classes),
                             in_chans=c, img_size=h, **rec.model)
    if init:
        load_init(model, init, len(classes))
    if train_last:
        model.freeze(train_last)
    return model, name


def load_init(model: nn.Module, init: str, num_classes: int) -> None:
    """--init torchvision:PATH (ImageNet ResNet-18 state dict) or zoo:TAG (a zoo checkpoint); the head is
    replaced when the class count differs."""
    kind, _, ref = init.partition(":")
    if kind == "torchvision":
        if not Path(ref).exists():
            raise ZooError(f"--init torchvision:{ref}: file not found")
        state = load_tensors(Path(ref), what="--init torchvision:")
        state = state.get("state_dict", state)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ZooError(f"--init torchvision:{ref}: not a state dict (a mapping of names to tensors)")
    elif kind == "zoo":
        try:
            state = load(ref).state_dict()
        except ZooError as e:
            raise ZooError(f"--init zoo:{ref}: {e}") from None
    elif kind == "xavier" and not ref and ":" not in init:
        return init_weights(model, "xavier")
    else:
        raise ZooError(f"--init {init!r}: expected torchvision:PATH, zoo:TAG or xavier")
    head = model.get_classifier()
    head_keys = {k for k in state if k.startswith("fc.")}
    if state.get("fc.weight") is not None and state["fc.weight"].shape[0] != num_classes:
        state = {k: v for k, v in state.items() if k not in head_keys}
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    if wrong:  # e.g. an MNIST (1-channel, 28x28) checkpoint into a CIFAR model
        raise ZooError(f"--init {init}: tensor shapes differ from {type(model).__name__} on this dataset "
                       f"(checkpoint vs model): {'; '.join(wrong[:3])}; start from a checkpoint trained on inputs "
                       "of the same channels and size")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ZooError(f"--init {init}: state dict does not fit {type(model).__name__}: "
                       f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    if head.out_features != num_classes:
        model.reset_classifier(num_classes)


def load_tensors(path: Path, *, what: str, map_location="cpu") -> Any:
    """torch.load restricted to tensors and plain containers (weights_only=True): a checkpoint or state dict is data,
    and a pickle payload in one must never run. Anything torch refuses or cannot read is one ZooError naming it."""
    if not Path(path).is_file():  # a FIFO would block torch.load, a folder fails deep inside it
        raise ZooError(f"{what}{path}: not a regular file; refused")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a hostile file makes the weights-only unpickler raise UnpicklingError, RuntimeError,
        # IndexError, KeyError, ...: whichever it is, the answer is one error naming the file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ZooError(f"{what}{path}: not a readable tensor file; refused ({first})") from None
    if not isinstance(obj, dict):
        raise ZooError(f"{what}{path}: expected a dict of tensors, found {type(obj).__name__}; refused")
    return obj


class TrainState:
    """What a run carries from one epoch to the next, and so what checkpoint.pt holds: the model, optimizer, LR
    schedule, weight average, the number of finished epochs, the history and the early-stopping counters.
    `state_dict()` / `load_state_dict()` are the only code that knows the checkpoint's keys.

    No RNG state is kept: dropout is seeded from (seed, epoch) and the loader's order and augmentation from
    (seed, epoch) at each epoch's start, so a run resumed at an epoch boundary continues exactly."""

    KEYS = frozenset({"model", "optimizer", "scheduler", "epoch", "history", "best", "bad_epochs", "model_name",
                      "num_classes"})

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, sched, ema: WeightEMA | None, *,
                 model_name: str, num_classes: int, recipe: Recipe):
        self.model, self.opt, self.sched, self.ema = model, opt, sched, ema
        self.model_name, self.num_classes, self.recipe = model_name, num_classes, recipe
        self.epoch = 0  # finished epochs: the index of the next one
        self.history: list[dict] = []
        self.best, self.bad_epochs, self.train_seconds = -1.0, 0, 0.0

    @property
    def shipped(self) -> nn.Module:
        """The weights that are validated and shipped: the average with --ema, else the trained ones."""
        return self.ema.module if self.ema else self.model

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "epoch": self.epoch - 1, "history": self.history,
                "best": self.best, "bad_epochs": self.bad_epochs, "model_name": self.model_name,
                "num_classes": self.num_classes, "recipe": self.recipe.to_dict(),
                "train_seconds": self.train_seconds, "ema": self.ema.module.state_dict() if self.ema else None}

    def load_state_dict(self, ck: dict[str, Any], *, source: str = "checkpoint") -> dict[str, tuple]:
        """Restore from `ck` (a dict read by load_tensors); returns the recipe values that differ from the
        checkpoint's ({field: (then, now)}), for the caller to report."""
        if self.KEYS - ck.keys():
            raise ZooError(f"{source}: not a zoo checkpoint (missing {sorted(self.KEYS - ck.keys())}); "
                           "use another --out or drop --resume")
        if ck["model_name"] != self.model_name or ck["num_classes"] != self.num_classes:
            raise ZooError(f"{source}: checkpoint is for {ck['model_name']} with {ck['num_classes']} classes, "
                           f"not {self.model_name} with {self.num_classes}; use another --out or drop --resume")
        # The file may not be one this code wrote: every field is checked before it is trusted, and a part that
        # does not fit what it is loaded into is one error naming it, not a traceback from deep inside torch.
        def is_int(v, lo=0):
            return isinstance(v, int) and not isinstance(v, bool) and v >= lo

        checks = {"epoch": is_int(ck["epoch"]), "bad_epochs": is_int(ck["bad_epochs"]),
                  "best": isinstance(ck["best"], int | float) and not isinstance(ck["best"], bool),
                  "history": isinstance(ck["history"], list) and len(ck["history"]) == ck["epoch"] + 1
                  and all(isinstance(r, dict) and is_int(r.get("epoch"), 1) for r in ck["history"])
                  if is_int(ck["epoch"]) else False,
                  "recipe": isinstance(ck.get("recipe", {}), dict),
                  "train_seconds": isinstance(ck.get("train_seconds", 0.0), int | float),
                  "model": isinstance(ck["model"], dict), "optimizer": isinstance(ck["optimizer"], dict),
                  "scheduler": isinstance(ck["scheduler"], dict),
                  "ema": ck.get("ema") is None or isinstance(ck["ema"], dict)}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ZooError(f"{source}: checkpoint field(s) {', '.join(bad)} hold values this run cannot resume "
                           "from (damaged or not written by zoo); use another --out or drop --resume")
        now = self.recipe.to_dict()
        changed = {k: (v, now.get(k)) for k, v in ck.get("recipe", {}).items() if v != now.get(k)}
        parts = [("model", self.model, ck["model"]), ("optimizer", self.opt, ck["optimizer"]),
                 ("scheduler", self.sched, ck["scheduler"])]
        if self.ema:  # a checkpoint without an average (the run had no --ema): it starts from the resumed weights
            parts.append(("ema", self.ema.module, ck["ema"] if ck.get("ema") is not None else None))
        for name, target, state in parts:
            try:
                target.load_state_dict(state if state is not None else self.model.state_dict())
            except Exception as e:  # shapes, keys, param groups: torch raises RuntimeError/ValueError/KeyError/...
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ZooError(f"{source}: its {name} state does not fit this run ({first}); use another --out or "
                               "drop --resume") from None
        self.epoch, self.history, self.best, self.bad_epochs = ck["epoch"] + 1, ck["history"], ck["best"], \
            ck["bad_epochs"]
        self.train_seconds = ck.get("train_seconds", 0.0)
        return changed

    def save(self, path: Path) -> None:
        atomic_write(path, lambda tmp: torch.save(self.state_dict(), tmp))


@dataclass
class RunContext:
    """What a run fixed before its first step and every stage reads: the recipe, seed, device, precision, this
    rank, the output folder, and the module the steps run through (DDP- and torch.compile-wrapped as asked)."""

    rec: Recipe
    seed: int
    dev: torch.device
    rank: int
    world: int
    bf16: bool
    channels_last: bool
    progress: bool
    out: Path
    net: nn.Module | None = None  # the model, or its DDP wrapper: what .train() is called on
    fwd: nn.Module | None = None  # net, or torch.compile(net)

    @property
    def cuda(self) -> bool:
        return self.dev.type == "cuda"

    @property
    def ckpt_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def last_good(self) -> str:
        return str(self.ckpt_path) if self.ckpt_path.exists() else "(none yet)"


def train(model_or_name, dataset: str, recipe: str | Recipe | None = None, *, epochs: int | None = None,
          out_dir: str | os.PathLike | None = None, device: str | None = None, seed: int = 0, resume: bool = False,
          init: str | None = None, train_last: int | None = None, train_subset: int | None = None,
          compile: bool | None = None, channels_last: bool | None = None, bf16: bool | None = None,
          tensorboard: bool = False, progress: bool = True, evaluate_test: bool = True, fp16_weights: bool = False,
          labels: str = "fine", overwrite: bool = False, **overrides) -> TrainResult:
    """Train a registered model (or any ZooModel) on an ingested dataset; returns the trained model, its history
    and its test evaluation. Writes log.jsonl, steps.jsonl, curves.png, checkpoint.pt, model.safetensors and
    result.json into `out_dir` (default runs/MODEL.DATASET).

    recipe: a name from `zoo list --recipes` or a Recipe; `epochs` and `**overrides` (lr=..., model={...}) replace
    its fields. resume=True continues from out_dir/checkpoint.pt (bit-identical to an uninterrupted run); an
    out_dir holding a finished run (model.safetensors or result.json) is refused unless resume=True or
    overwrite=True (replace it: its outputs are removed when the new run starts). init: torchvision:PATH, zoo:TAG
    or xavier; train_last=K freezes all but the last K stages; train_subset=N keeps N images per class.
    compile / channels_last / bf16 default to on for CUDA. fp16_weights stores (and measures) fp16 weights.
    labels: "fine" or "coarse" (CIFAR-100)."""
    if not isinstance(model_or_name, str | nn.Module):
        raise ZooError(f"zoo.train takes a registered model name or an nn.Module, got {type(model_or_name).__name__}")
    for arg, value in (("dataset", dataset), ("init", init), ("labels", labels), ("device", device)):
        if value is not None and not isinstance(value, str):
            raise ZooError(f"{arg} must be a string, got {type(value).__name__}")
    if out_dir is not None and not isinstance(out_dir, str | os.PathLike):
        raise ZooError(f"out_dir must be a path, got {type(out_dir).__name__}")
    if recipe is None:
        recipe = default_recipe(model_or_name) if isinstance(model_or_name, str) else "adam"
    rec = get_recipe(recipe, epochs=epochs, **overrides)
    seed = _check_run_args(seed, train_last, train_subset, resume, overwrite)
    commit = git_commit()  # the code this run trains with: read now, not when a run of hours ends
    tag, out, finished = _run_folder(model_or_name, dataset, labels, out_dir, resume, overwrite)
    rank, world, opened_group = _dist()
    dev = _device(device, world)
    cuda = dev.type == "cuda"
    if cuda:  # batch shapes are fixed (drop_last): let cuDNN time its conv algorithms once and keep the fastest
        torch.backends.cudnn.benchmark = True
    ctx = RunContext(rec, seed, dev, rank, world, bf16=cuda if bf16 is None else bf16,
                     channels_last=cuda if channels_last is None else channels_last, progress=progress, out=out)
    torch.manual_seed(seed)
    if not cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)

    data = open_split(dataset, "train", labels=labels)
    model, name = build_model(model_or_name, dataset, data.classes, data.images.shape[1:], rec, init, train_last)
    model.to(dev)
    if ctx.channels_last:
        model.to(memory_format=torch.channels_last)
    flip_ok = flips_keep_labels(dataset, data.images.shape[-1])
    train_loader, val_loader = _loaders(ctx, data, dataset, labels, flip_ok, train_subset)
    out.mkdir(parents=True, exist_ok=True)  # `out` was chosen (and checked) on entry
    opt = make_optimizer(rec, model, fused=cuda)  # one fused kernel per step on CUDA
    steps, total = len(train_loader), rec.epochs * len(train_loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(rec, s, total, steps))
    ema = WeightEMA(model, rec.ema) if rec.ema else None
    state = TrainState(model, opt, sched, ema, model_name=name, num_classes=len(data.classes), recipe=rec)
    _start(state, ctx, resume, overwrite, finished)
    ctx.net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if cuda else None) if world > 1 \
        else model
    # On CUDA, CUDA graphs ("reduce-overhead") remove the per-kernel launch cost that dominates small models.
    compile = cuda if compile is None else compile
    ctx.fwd = torch.compile(ctx.net, mode="reduce-overhead" if cuda else None) if compile else ctx.net
    _run_epochs(state, ctx, train_loader, val_loader, tensorboard)

    meta = _weights_meta(state, ctx, tag, dataset, labels, data, recipe, init, train_last, train_subset, commit)
    weights, result_test = finalize(state, ctx, meta, dataset, labels, flip_ok, evaluate_test, fp16_weights)
    if world > 1:
        # Rank 0 saves and evaluates alone: the other ranks wait for it, so every rank leaves together. The group
        # this run opened is closed here; left to Gloo's destructor at interpreter exit, a rank that left early
        # could abort ("terminate called without an active exception", SIGABRT) and torchrun then failed the run.
        torch.distributed.barrier()
        if opened_group:
            torch.distributed.destroy_process_group()
    return TrainResult(model, out, weights, state.history, result_test, state.train_seconds)


def _check_run_args(seed, train_last, train_subset, resume: bool, overwrite: bool) -> int:
    """The arguments a recipe does not check, refused before anything is read or written; returns the seed."""
    for arg, value in (("train_last", train_last), ("train_subset", train_subset)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer)):
            raise ZooError(f"--{arg.replace('_', '-')} must be an integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed <= MAX_SEED:
        # numpy's generators refuse negative seeds and torch's those past 2**64 (tracebacks, deep in a run): one
        # range both take. Also the Python API's entry.
        raise ZooError(f"--seed {seed!r}: must be an integer in 0..{MAX_SEED} (2**32 - 1)")
    for arg, value in (("train_last", train_last), ("train_subset", train_subset)):
        if value is not None and value < 1:  # a negative N-per-class would slice off the last N images instead
            raise ZooError(f"--{arg.replace('_', '-')} must be >= 1, got {value} (leave it out to train every stage "
                           "on every image)")
    if resume and overwrite:
        raise ZooError("--resume and --overwrite (resume=True, overwrite=True) contradict each other: --resume "
                       "continues the run in the out dir, --overwrite replaces it; pass one")
    return int(seed)


def _run_folder(model_or_name, dataset: str, labels: str, out_dir, resume: bool, overwrite: bool):
    """(tag, out folder, names of a finished run's files in it). A finished run is never replaced silently (re-running
    into the default runs/MODEL.DATASET would overwrite a trained model): checked before any data is opened."""
    run_name = model_or_name if isinstance(model_or_name, str) else getattr(model_or_name, "zoo_name",
                                                                            type(model_or_name).__name__)
    tag = f"{run_name}.{dataset}" + ("" if labels == "fine" else f"-{labels}")  # coarse labels: another entry
    out = Path(out_dir or Path("runs") / tag)
    finished = [f for f in ("model.safetensors", "result.json") if (out / f).exists()]
    if finished and not (resume or overwrite):
        raise ZooError(f"--out {out} holds a finished run ({', '.join(finished)}); pass --resume to continue it, "
                       "--overwrite to replace it (overwrite=True in Python), or another --out")
    return tag, out, finished


def _device(device: str | None, world: int) -> torch.device:
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as e:
        raise ZooError(f"--device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ZooError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    return dev


def _loaders(ctx: RunContext, data, dataset: str, labels: str, flip_ok: bool, train_subset):
    """(train loader, validation loader or None): the recipe's augmentation (no flips for digits), this rank's
    shard, and a held-out slice of the train split where the dataset has no validation split."""
    rec = ctx.rec
    spec = DATASETS.get(dataset)
    has_val = bool(spec and spec.has_val)
    train_idx, val_idx = split_indices(data.labels, rec if not has_val else Recipe(val_fraction=0.0), ctx.seed,
                                       train_subset)
    augment = Augment.parse(rec.augment if rec.augment != "auto" else ("crop_flip" if flip_ok else "mnist"))
    if augment.flip and not flip_ok and isinstance(rec.augment, str):
        # A recipe tuned on CIFAR (crop_flip_cutout) would mirror digits; an explicit Augment/dict is kept as given.
        augment = replace(augment, flip=False)
        if ctx.rank == 0:
            print(f"note: horizontal flips are off for {dataset} (mirroring changes its labels); "
                  f"training with {augment}")
    backend = "gpu" if ctx.cuda else "native"
    train_loader = Loader(data, rec.batch_size, augment=augment, shuffle=True, drop_last=True, seed=ctx.seed,
                          backend=backend, device=ctx.dev, channels_last=ctx.channels_last, indices=train_idx,
                          shard=(ctx.rank, ctx.world), dtype=torch.bfloat16 if ctx.bf16 and ctx.cuda else torch.float32)
    if len(train_loader) == 0:
        raise ZooError(f"batch_size {rec.batch_size} is larger than the {len(train_idx)} training images per rank")
    val_loader = None
    if has_val or len(val_idx):
        val_data = open_split(dataset, "valid", labels=labels) if has_val else data
        val_loader = Loader(val_data, 1024, augment=None, shuffle=False, backend=backend, device=ctx.dev,
                            channels_last=ctx.channels_last, indices=None if has_val else val_idx)
    return train_loader, val_loader


def _start(state: TrainState, ctx: RunContext, resume: bool, overwrite: bool, finished: list[str]) -> None:
    """Resume from checkpoint.pt, or start afresh: clear the logs (and, with --overwrite, the finished run)."""
    ckpt = ctx.ckpt_path
    if resume and ckpt.exists():
        changed = state.load_state_dict(load_tensors(ckpt, what="--resume: ", map_location=ctx.dev), source=str(ckpt))
        if ctx.rank == 0:
            if changed:  # e.g. more epochs: the LR schedule follows the new values from here on
                print("note: --resume with other recipe values than the checkpoint's: "
                      + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
            remove_stale_temps(ctx.out)  # a temp checkpoint of the killed run: this run takes the folder over
            _trim_logs(ctx.out, state.epoch - 1, state.history)
    elif ctx.rank == 0:
        if resume:  # restart scripts can always pass --resume: the first run starts fresh, and says so
            print(f"note: --resume: no checkpoint at {ckpt}; starting from scratch")
        if overwrite and finished:
            # Removed as the new run starts, not as it ends: a failed run must not leave the old model beside its
            # own logs, as if it had produced it.
            print(f"note: --overwrite: replacing the finished run in {ctx.out}")
        old = ("model.safetensors", "result.json", "curves.png", "checkpoint.pt") if overwrite and finished else ()
        for f in ("log.jsonl", "steps.jsonl", *old):
            (ctx.out / f).unlink(missing_ok=True)


def _run_epochs(state: TrainState, ctx: RunContext, train_loader: Loader, val_loader: Loader | None,
                tensorboard: bool) -> None:
    """The epochs left to run: train, check, validate and log each, checkpoint it, stop early if the recipe says."""
    rec, rank = ctx.rec, ctx.rank
    writer = _tensorboard(ctx.out) if tensorboard and rank == 0 else None
    log = open(ctx.out / "log.jsonl", "a") if rank == 0 else None
    steps_log = open(ctx.out / "steps.jsonl", "a") if rank == 0 else None
    start = state.epoch
    try:
        for epoch in range(start, rec.epochs):
            row = train_one_epoch(state, ctx, train_loader, steps_log, first=epoch == start)
            state.train_seconds += row["epoch_seconds"]
            # The loss is measured before each step: the last step can still turn the weights into NaN/inf, which
            # would be checkpointed and shipped. Checked before the checkpoint is written.
            _check_finite_weights(state.model, state.ema, f"after epoch {epoch + 1}", ctx.ckpt_path)
            state.epoch = epoch + 1
            if rank == 0:
                if val_loader is not None:
                    row["val_loss"], row["val_acc"] = validate(state.shipped, val_loader, ctx.bf16, ctx.dev)
                    if not math.isfinite(row["val_loss"]):  # finite weights, overflowing outputs: as broken
                        raise NaNLossError(f"validation loss became {row['val_loss']} in epoch {epoch + 1}; the "
                                           f"last good checkpoint is {ctx.last_good()}; lower the LR")
                state.history.append(row)
                log.write(json.dumps(row) + "\n")
                log.flush(), steps_log.flush()
                if writer:
                    for k, v in row.items():
                        writer.add_scalar(k, v, epoch + 1)
                score = row.get("val_acc", row["train_acc"])
                state.best, state.bad_epochs = (score, 0) if score > state.best else (state.best, state.bad_epochs + 1)
                state.save(ctx.ckpt_path)
            stop = torch.tensor(int(bool(rec.patience) and state.bad_epochs >= rec.patience), device=ctx.dev)
            if ctx.world > 1:  # rank 0 alone validates, so it decides; the broadcast also keeps the ranks in step
                torch.distributed.broadcast(stop, src=0)
            if stop:
                if rank == 0 and ctx.progress:
                    print(f"early stop: no validation improvement for {rec.patience} epochs")
                break
    finally:
        for f in (log, steps_log, writer):
            if f:
                f.close()


def train_one_epoch(state: TrainState, ctx: RunContext, loader: Loader, steps_log=None, *, first: bool = False
                    ) -> dict[str, Any]:
    """One pass over `loader` at epoch `state.epoch`: forward, loss, backward, step, LR schedule, weight average.
    Returns the epoch's row (loss, accuracy, lr, seconds, img/s; the first epoch of a run also its first step's
    seconds, which carry torch.compile and cuDNN autotuning). A non-finite loss raises NaNLossError."""
    rec, dev, epoch = ctx.rec, ctx.dev, state.epoch
    model, opt, sched, ema = state.model, state.opt, state.sched, state.ema
    torch.manual_seed(ctx.seed * 100003 + epoch)  # dropout etc.: a function of (seed, epoch), so resume is exact
    loader.set_epoch(epoch)
    ctx.net.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.long)
    seen, first_step = 0, None
    bar = _bar(ctx.progress and ctx.rank == 0, len(loader) * rec.batch_size,
               f"{state.model_name} {epoch + 1}/{rec.epochs}")
    for i, (x, y) in enumerate(loader):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=ctx.bf16):
            logits = ctx.fwd(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=rec.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if rec.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), rec.grad_clip)
        opt.step()
        sched.step()
        if ema:
            ema.update(model)
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if steps_log and (i % 10 == 0 or not ctx.cuda):
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise NaNLossError(f"loss became {lv} at epoch {epoch + 1} step {i}; the last good checkpoint "
                                   f"is {ctx.last_good()}; lower the LR")
            steps_log.write(json.dumps({"epoch": epoch, "step": epoch * len(loader) + i, "loss": lv,
                                        "lr": sched.get_last_lr()[0]}) + "\n")
            if bar:
                bar.set_postfix(loss=f"{lv:.3f}", refresh=False)
        if bar:
            bar.update(len(y))  # the bar's rate is img/s (this rank's) and its ETA follows from it
        if i == 0 and first:
            if ctx.cuda:
                torch.cuda.synchronize()
            first_step = time.perf_counter() - t0
    if ctx.cuda:
        torch.cuda.synchronize()
    epoch_time = time.perf_counter() - t0
    if bar:
        bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}", img_s=f"{seen * ctx.world / epoch_time:.0f}")
        bar.close()
    train_loss = float(loss_sum) / seen
    if not math.isfinite(train_loss):
        raise NaNLossError(f"loss became {train_loss} in epoch {epoch + 1}; the last good checkpoint is "
                           f"{ctx.last_good()}; lower the LR")
    row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": float(correct) / seen,
           "lr": sched.get_last_lr()[0], "epoch_seconds": epoch_time, "images_per_s": seen * ctx.world / epoch_time}
    if first:
        row["first_step_seconds"] = first_step
    return row


def _weights_meta(state: TrainState, ctx: RunContext, tag: str, dataset: str, labels: str, data, recipe, init,
                  train_last, train_subset, commit: str) -> WeightsMeta:
    """What model.safetensors and the manifest say about the weights: data, preprocessing, recipe, provenance."""
    partial = partial_splits(dataset)  # cached from a partial copy (ingest --allow-partial): the file says so
    return WeightsMeta(
        tag=tag, model=state.model_name, dataset=dataset, labels=labels, classes=list(data.classes),
        mean=data.norm[0], std=data.norm[1],
        input_size=[data.images.shape[3], data.images.shape[1], data.images.shape[2]],
        config_overrides=ctx.rec.model,
        recipe=ctx.rec.to_dict() | {"name": recipe if isinstance(recipe, str) else None, "seed": ctx.seed,
                                    "init": init, "train_last": train_last, "train_subset": train_subset},
        epochs_run=len(state.history), train_seconds=round(state.train_seconds, 2), device=_device_name(ctx.dev),
        bf16=ctx.bf16, channels_last=ctx.channels_last, torch=torch.__version__, commit=commit,
        date=time.strftime("%Y-%m-%d"), partial_data=partial or None)


def finalize(state: TrainState, ctx: RunContext, meta: WeightsMeta, dataset: str, labels: str, flip_ok: bool,
             evaluate_test: bool, fp16_weights: bool):
    """After the last epoch: the weight average replaces the trained weights, (rank 0) fp16 rounding, the test
    evaluation of exactly what ships, the checks that nothing non-finite ships, model.safetensors, result.json and
    curves.png. Returns (weights path, test EvalResult or None)."""
    model = state.model
    if state.ema:  # what ships is the average: the trained weights stay in checkpoint.pt for --resume
        model.load_state_dict(state.ema.module.state_dict())
    model.eval()
    weights = ctx.out / "model.safetensors"
    if ctx.rank != 0:
        return weights, None
    if ctx.cuda:
        model.to(memory_format=torch.contiguous_format)
    model.zoo_meta = meta
    if fp16_weights:
        # Measure the weights that ship: the manifest's metrics must be what `zoo.load(tag)` gives users, and
        # fp16 rounding moves top-1 by a few hundredths. checkpoint.pt (for --resume) keeps the fp32 values.
        with torch.no_grad():
            for t in model.state_dict().values():
                if t.is_floating_point():
                    t.copy_(t.half())
    result_test = None
    if evaluate_test:
        try:
            result_test = evaluate(model, dataset, device=str(ctx.dev), batch_size=1024, labels=labels,
                                   tta=flip_ok)  # top1 stays single-view; flip TTA is its own figure
            meta = meta.replace(metrics={
                "top1": result_test.top1, "top5": result_test.top5, "loss": result_test.loss,
                "top1_flip_tta": result_test.top1_flip_tta, "macro_f1": result_test.macro["f1"], "split": "test",
                "per_class_accuracy": result_test.per_class_accuracy, "evaluated_with": "zoo.evaluate, backend torch"})
        except ZooError as e:
            print(f"note: no test evaluation: {e}")
    _check_finite_weights(model, None, "as saved" + (" (rounded to fp16)" if fp16_weights else ""), ctx.ckpt_path)
    if result_test is not None and not math.isfinite(result_test.loss):  # a number printed with rc 0: never
        raise NaNLossError(f"test loss is {result_test.loss}: the trained model's outputs overflow; no "
                           f"{weights.name} written (last checkpoint: {ctx.ckpt_path}); lower the LR")
    meta = save_weights(model, weights, meta, fp16=fp16_weights)
    model.zoo_meta = meta
    (ctx.out / "result.json").write_text(json.dumps({"meta": meta.to_dict(), "history": state.history}, indent=1))
    plot_curves(state.history, ctx.out / "curves.png", title=f"{state.model_name} on {dataset}")
    return weights, result_test


def _trim_logs(out: Path, last_epoch: int, history: list[dict]) -> None:
    """Cut log.jsonl/steps.jsonl back to what the checkpoint holds, so each epoch and step appears once after a kill
    and --resume: the killed epoch's steps (and a half-written last line) would otherwise be logged twice. The
    checkpoint's history is the epoch log; steps are kept up to the checkpoint's epoch."""
    atomic_write(out / "log.jsonl", lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in history)))
    steps = out / "steps.jsonl"
    if not steps.exists():
        return
    kept = []
    for line in steps.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # the last line of a killed run
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int) and row["epoch"] <= last_epoch:
            kept.append(line + "\n")
    atomic_write(steps, lambda tmp: tmp.write_text("".join(kept)))


def _check_finite_weights(model: nn.Module, ema, when: str, ckpt_path: Path) -> None:
    """NaNLossError naming the first non-finite tensors of the model (or of its --ema average): such weights must
    reach neither checkpoint.pt nor model.safetensors."""
    for what, m in (("weights", model), ("weight average (--ema)", ema.module if ema else None)):
        if m is None:
            continue
        bad = [n for n, t in m.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise NaNLossError(f"the model's {what} hold NaN/inf {when} ({', '.join(bad[:3])}"
                               f"{', ...' if len(bad) > 3 else ''}); nothing saved; the last good checkpoint is "
                               f"{ckpt_path if ckpt_path.exists() else '(none yet)'}; lower the LR or clip gradients")


def validate(model: nn.Module, loader: Loader, bf16: bool, dev: torch.device) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` over `loader`, in eval mode; the module's mode is restored."""
    was_training = model.training
    model.eval()
    loss, correct, n = 0.0, 0, 0
    try:
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            for x, y in loader:
                out = model(x).float()
                loss += float(F.cross_entropy(out, y, reduction="sum"))
                correct += int((out.argmax(1) == y).sum())
                n += len(y)
    finally:
        model.train(was_training)
    return loss / n, correct / n


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({os.cpu_count()} cores)"


def _bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", unit_scale=True, leave=False, mininterval=1.0)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("note: tensorboard is not installed (pip install 'zoo[tensorboard]'); skipping")
        return None
    return SummaryWriter(str(out / "tb"))
