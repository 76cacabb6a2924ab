"""The one training loop for every model: optimisers, schedules, checkpoints/resume, DDP, logging."""

from __future__ import annotations

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
from .io import atomic_write, remove_stale_temps
from .recipes import Recipe, default_recipe, get_recipe


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
        import copy

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
    from .registry import create_model

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
        from .weights import load

        try:
            state = load(ref).state_dict()
        except ZooError as e:
            raise ZooError(f"--init zoo:{ref}: {e}") from None
    elif kind == "xavier":
        from .registry import init_weights

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


# What --resume reads back from checkpoint.pt (written at the end of each epoch below).
CHECKPOINT_KEYS = frozenset({"model", "optimizer", "scheduler", "epoch", "history", "best", "bad_epochs", "model_name",
                             "num_classes"})


def load_tensors(path: Path, *, what: str, map_location="cpu") -> Any:
    """torch.load restricted to tensors and plain containers (weights_only=True): a checkpoint or state dict is data,
    and a pickle payload in one must never run. Anything torch refuses or cannot read is one ZooError naming it."""
    import pickle

    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ZooError(f"{what}{path}: not a readable tensor file; refused ({first})") from None
    if not isinstance(obj, dict):
        raise ZooError(f"{what}{path}: expected a dict of tensors, found {type(obj).__name__}; refused")
    return obj


def _atomic_save(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def train(model_or_name, dataset: str, recipe: str | Recipe | None = None, *, epochs: int | None = None,
          out_dir: str | os.PathLike | None = None, device: str | None = None, seed: int = 0, resume: bool = False,
          init: str | None = None, train_last: int | None = None, train_subset: int | None = None,
          compile: bool | None = None, channels_last: bool | None = None, bf16: bool | None = None,
          tensorboard: bool = False, progress: bool = True, evaluate_test: bool = True, fp16_weights: bool = False,
          labels: str = "fine", overwrite: bool = False, **overrides) -> TrainResult:
    """Train a registered model (or any ZooModel) on an ingested dataset; returns the trained model,
    its history and its test evaluation. Writes log.jsonl, curves.png, checkpoint.pt and model.safetensors.
    An out_dir holding a finished run (model.safetensors or result.json) is refused unless resume=True (continue
    it) or overwrite=True (replace it: its outputs are removed when the new run starts)."""
    from .evaluation import evaluate
    from .weights import save_weights

    if recipe is None:
        recipe = default_recipe(model_or_name) if isinstance(model_or_name, str) else "adam"
    rec = get_recipe(recipe, epochs=epochs, **overrides)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed <= MAX_SEED:
        # numpy's generators refuse negative seeds and torch's those past 2**64 (tracebacks, deep in a run): one
        # range both take, checked before anything is read or written. Also the Python API's entry.
        raise ZooError(f"--seed {seed!r}: must be an integer in 0..{MAX_SEED} (2**32 - 1)")
    seed = int(seed)
    commit = git_commit()  # the code this run trains with: read now, not when a run of hours ends
    for arg, value in (("train_last", train_last), ("train_subset", train_subset)):
        if value is not None and value < 1:  # a negative N-per-class would slice off the last N images instead
            raise ZooError(f"--{arg.replace('_', '-')} must be >= 1, got {value} (leave it out to train every stage "
                           "on every image)")
    # A finished run is never replaced silently (re-running into the default runs/MODEL.DATASET would overwrite a
    # trained model): checked first, before any data is opened or anything is written.
    run_name = model_or_name if isinstance(model_or_name, str) else getattr(model_or_name, "zoo_name",
                                                                            type(model_or_name).__name__)
    out = Path(out_dir or Path("runs") / (f"{run_name}.{dataset}" + ("" if labels == "fine" else f"-{labels}")))
    finished = [f for f in ("model.safetensors", "result.json") if (out / f).exists()]
    if resume and overwrite:
        raise ZooError("--resume and --overwrite (resume=True, overwrite=True) contradict each other: --resume "
                       "continues the run in the out dir, --overwrite replaces it; pass one")
    if finished and not (resume or overwrite):
        raise ZooError(f"--out {out} holds a finished run ({', '.join(finished)}); pass --resume to continue it, "
                       "--overwrite to replace it (overwrite=True in Python), or another --out")
    rank, world, opened_group = _dist()
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as e:
        raise ZooError(f"--device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ZooError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    cuda = dev.type == "cuda"
    if cuda:  # batch shapes are fixed (drop_last): let cuDNN time its conv algorithms once and keep the fastest
        torch.backends.cudnn.benchmark = True
    compile = cuda if compile is None else compile
    channels_last = cuda if channels_last is None else channels_last
    bf16 = cuda if bf16 is None else bf16
    torch.manual_seed(seed)
    if not cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)

    data = open_split(dataset, "train", labels=labels)
    spec = DATASETS.get(dataset)
    has_val = bool(spec and spec.has_val)
    train_idx, val_idx = split_indices(data.labels, rec if not has_val else Recipe(val_fraction=0.0), seed,
                                       train_subset)
    model, name = build_model(model_or_name, dataset, data.classes, data.images.shape[1:], rec, init, train_last)
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    flip_ok = flips_keep_labels(dataset, data.images.shape[-1])
    augment = Augment.parse(rec.augment if rec.augment != "auto" else ("crop_flip" if flip_ok else "mnist"))
    if augment.flip and not flip_ok and isinstance(rec.augment, str):
        # A recipe tuned on CIFAR (crop_flip_cutout) would mirror digits; an explicit Augment/dict is kept as given.
        augment = replace(augment, flip=False)
        if rank == 0:
            print(f"note: horizontal flips are off for {dataset} (mirroring changes its labels); "
                  f"training with {augment}")
    backend = "gpu" if cuda else "native"
    train_loader = Loader(data, rec.batch_size, augment=augment, shuffle=True, drop_last=True, seed=seed,
                          backend=backend, device=dev, channels_last=channels_last, indices=train_idx,
                          shard=(rank, world), dtype=torch.bfloat16 if bf16 and cuda else torch.float32)
    if len(train_loader) == 0:
        raise ZooError(f"batch_size {rec.batch_size} is larger than the {len(train_idx)} training images per rank")
    val_data = open_split(dataset, "valid", labels=labels) if has_val else data
    val_loader = None
    if has_val or len(val_idx):
        val_loader = Loader(val_data, 1024, augment=None, shuffle=False, backend=backend, device=dev,
                            channels_last=channels_last, indices=None if has_val else val_idx)

    tag = f"{name}.{dataset}" + ("" if labels == "fine" else f"-{labels}")  # a coarse-label model is another entry
    out.mkdir(parents=True, exist_ok=True)  # `out` was chosen (and checked) on entry
    ckpt_path = out / "checkpoint.pt"
    opt = make_optimizer(rec, model, fused=cuda)  # one fused kernel per step on CUDA
    steps_per_epoch = len(train_loader)
    total = rec.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(rec, s, total, steps_per_epoch))
    start_epoch, history, best, bad_epochs, train_seconds = 0, [], -1.0, 0, 0.0
    ema_state = None
    if resume and ckpt_path.exists():
        ck = load_tensors(ckpt_path, what="--resume: ", map_location=dev)
        if CHECKPOINT_KEYS - ck.keys():
            raise ZooError(f"{ckpt_path}: not a zoo checkpoint (missing {sorted(CHECKPOINT_KEYS - ck.keys())}); "
                           "use another --out or drop --resume")
        if ck["model_name"] != name or ck["num_classes"] != len(data.classes):
            raise ZooError(f"{ckpt_path}: checkpoint is for {ck['model_name']} with {ck['num_classes']} classes, "
                           f"not {name} with {len(data.classes)}; use another --out or drop --resume")
        now = rec.to_dict()
        changed = {k: (v, now.get(k)) for k, v in ck.get("recipe", {}).items() if v != now.get(k)}
        if changed and rank == 0:  # e.g. more epochs: the LR schedule follows the new values from here on
            print("note: --resume with other recipe values than the checkpoint's: "
                  + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start_epoch, history, best, bad_epochs = ck["epoch"] + 1, ck["history"], ck["best"], ck["bad_epochs"]
        train_seconds = ck.get("train_seconds", 0.0)
        ema_state = ck.get("ema")
        if rank == 0:
            remove_stale_temps(out)  # a temp checkpoint of the killed run: this run takes the folder over
            _trim_logs(out, ck["epoch"], history)
    elif rank == 0:
        if resume:  # restart scripts can always pass --resume: the first run starts fresh, and says so
            print(f"note: --resume: no checkpoint at {ckpt_path}; starting from scratch")
        if overwrite and finished:
            # Removed as the new run starts, not as it ends: a failed run must not leave the old model beside its
            # own logs, as if it had produced it.
            print(f"note: --overwrite: replacing the finished run in {out}")
        old = ("model.safetensors", "result.json", "curves.png", "checkpoint.pt") if overwrite and finished else ()
        for f in ("log.jsonl", "steps.jsonl", *old):
            (out / f).unlink(missing_ok=True)

    ema = WeightEMA(model, rec.ema) if rec.ema else None  # after resume: it starts from the weights trained on
    if ema and ema_state is not None:
        ema.module.load_state_dict(ema_state)
    elif ema and start_epoch and rank == 0:
        print(f"note: --resume: {ckpt_path} holds no weight average; it starts from the resumed weights")
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if cuda else None)
    # On CUDA, CUDA graphs ("reduce-overhead") remove the per-kernel launch cost that dominates small models.
    fwd = torch.compile(net, mode="reduce-overhead" if cuda else None) if compile else net
    writer = _tensorboard(out) if tensorboard and rank == 0 else None
    log = open(out / "log.jsonl", "a") if rank == 0 else None
    steps_log = open(out / "steps.jsonl", "a") if rank == 0 else None

    for epoch in range(start_epoch, rec.epochs):
        torch.manual_seed(seed * 100003 + epoch)  # dropout etc.: a function of (seed, epoch), so resume is exact
        train_loader.set_epoch(epoch)
        net.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        seen = 0
        bar = _bar(progress and rank == 0, steps_per_epoch * rec.batch_size, f"{name} {epoch + 1}/{rec.epochs}")
        for i, (x, y) in enumerate(train_loader):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                logits = fwd(x)
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
            if steps_log and (i % 10 == 0 or not cuda):
                lv = float(loss.detach())
                if not math.isfinite(lv):
                    raise NaNLossError(f"loss became {lv} at epoch {epoch + 1} step {i}; the last good checkpoint "
                                       f"is {ckpt_path if ckpt_path.exists() else '(none yet)'}; lower the LR")
                steps_log.write(json.dumps({"epoch": epoch, "step": epoch * steps_per_epoch + i, "loss": lv,
                                            "lr": sched.get_last_lr()[0]}) + "\n")
                if bar:
                    bar.set_postfix(loss=f"{lv:.3f}", refresh=False)
            if bar:
                bar.update(len(y))  # the bar's rate is img/s (this rank's) and its ETA follows from it
            if i == 0 and epoch == start_epoch:  # the first step carries torch.compile / cuDNN autotuning
                if cuda:
                    torch.cuda.synchronize()
                first_step = time.perf_counter() - t0
        if cuda:
            torch.cuda.synchronize()
        epoch_time = time.perf_counter() - t0
        train_seconds += epoch_time
        if bar:
            bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}", img_s=f"{seen * world / epoch_time:.0f}")
            bar.close()
        train_loss = float(loss_sum) / seen
        if not math.isfinite(train_loss):
            raise NaNLossError(f"loss became {train_loss} in epoch {epoch + 1}; the last good checkpoint is "
                               f"{ckpt_path if ckpt_path.exists() else '(none yet)'}; lower the LR")
        # The loss is measured before each step: the last step can still turn the weights into NaN/inf, which
        # would be checkpointed and shipped. Checked before the checkpoint is written.
        _check_finite_weights(model, ema, f"after epoch {epoch + 1}", ckpt_path)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": float(correct) / seen,
               "lr": sched.get_last_lr()[0], "epoch_seconds": epoch_time, "images_per_s": seen * world / epoch_time}
        if epoch == start_epoch:
            row["first_step_seconds"] = first_step
        if rank == 0:
            if val_loader is not None:
                row["val_loss"], row["val_acc"] = _validate(ema.module if ema else model, val_loader, bf16, dev)
                if not math.isfinite(row["val_loss"]):  # finite weights, overflowing outputs: as broken
                    raise NaNLossError(f"validation loss became {row['val_loss']} in epoch {epoch + 1}; the last "
                                       f"good checkpoint is {ckpt_path if ckpt_path.exists() else '(none yet)'}; "
                                       "lower the LR")
            history.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush(), steps_log.flush()
            if writer:
                for k, v in row.items():
                    writer.add_scalar(k, v, epoch + 1)
            score = row.get("val_acc", row["train_acc"])
            best, bad_epochs = (score, 0) if score > best else (best, bad_epochs + 1)
            _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                          "epoch": epoch, "history": history, "best": best, "bad_epochs": bad_epochs,
                          "model_name": name, "num_classes": len(data.classes), "recipe": rec.to_dict(),
                          "train_seconds": train_seconds, "ema": ema.module.state_dict() if ema else None}, ckpt_path)
        stop = torch.tensor(int(bool(rec.patience) and bad_epochs >= rec.patience), device=dev)
        if world > 1:  # rank 0 alone validates, so it decides; the broadcast also keeps the ranks in step
            torch.distributed.broadcast(stop, src=0)
        if stop:
            if rank == 0 and progress:
                print(f"early stop: no validation improvement for {rec.patience} epochs")
            break
    if log:
        log.close(), steps_log.close()
    if writer:
        writer.close()
    if ema:  # what ships is the average: the trained weights stay in checkpoint.pt for --resume
        model.load_state_dict(ema.module.state_dict())
    model.eval()
    result_test = None
    weights = out / "model.safetensors"
    if rank == 0:
        if cuda:
            model.to(memory_format=torch.contiguous_format)
        meta = {
            "tag": tag, "model": name, "dataset": dataset, "labels": labels, "classes": list(data.classes),
            "num_classes": len(data.classes), "mean": data.norm[0], "std": data.norm[1],
            "input_size": [data.images.shape[3], data.images.shape[1], data.images.shape[2]],
            "config_overrides": rec.model,
            "recipe": rec.to_dict() | {"name": recipe if isinstance(recipe, str) else None, "seed": seed, "init": init,
                                       "train_last": train_last, "train_subset": train_subset},
            "epochs_run": len(history), "train_seconds": round(train_seconds, 2), "device": _device_name(dev),
            "bf16": bf16, "channels_last": channels_last,
            "torch": torch.__version__, "commit": commit, "date": time.strftime("%Y-%m-%d"),
        }
        partial = partial_splits(dataset)
        if partial:  # cached from a partial copy (ingest --allow-partial): what is measured here must say so
            meta["partial_data"] = partial
        model.zoo_meta = meta
        if fp16_weights:
            # Measure the weights that ship: the manifest's metrics must be what `zoo.load(tag)` gives users, and
            # fp16 rounding moves top-1 by a few hundredths. checkpoint.pt (for --resume) keeps the fp32 values.
            with torch.no_grad():
                for t in model.state_dict().values():
                    if t.is_floating_point():
                        t.copy_(t.half())
        if evaluate_test:
            try:
                result_test = evaluate(model, dataset, device=str(dev), batch_size=1024, labels=labels,
                                       tta=flip_ok)  # top1 stays single-view; flip TTA is its own figure
                meta["metrics"] = {"top1": result_test.top1, "top5": result_test.top5, "loss": result_test.loss,
                                   "top1_flip_tta": result_test.top1_flip_tta,
                                   "macro_f1": result_test.macro["f1"], "split": "test",
                                   "per_class_accuracy": result_test.per_class_accuracy,
                                   "evaluated_with": "zoo.evaluate, backend torch"}
            except ZooError as e:
                print(f"note: no test evaluation: {e}")
        _check_finite_weights(model, None, "as saved" + (" (rounded to fp16)" if fp16_weights else ""), ckpt_path)
        if result_test is not None and not math.isfinite(result_test.loss):  # a number printed with rc 0: never
            raise NaNLossError(f"test loss is {result_test.loss}: the trained model's outputs overflow; no "
                               f"{weights.name} written (last checkpoint: {ckpt_path}); lower the LR")
        meta = save_weights(model, weights, meta, fp16=fp16_weights)
        model.zoo_meta = meta
        (out / "result.json").write_text(json.dumps({"meta": meta, "history": history}, indent=1))
        from .report import plot_curves

        plot_curves(history, out / "curves.png", title=f"{name} on {dataset}")
    if world > 1:
        # Rank 0 saves and evaluates alone: the other ranks wait for it, so every rank leaves together. The group
        # this run opened is closed here; left to Gloo's destructor at interpreter exit, a rank that left early
        # could abort ("terminate called without an active exception", SIGABRT) and torchrun then failed the run.
        torch.distributed.barrier()
        if opened_group:
            torch.distributed.destroy_process_group()
    return TrainResult(model, out, weights, history, result_test, train_seconds)


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


def _validate(model, loader, bf16, dev) -> tuple[float, float]:
    model.eval()
    loss, correct, n = 0.0, 0, 0
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        for x, y in loader:
            out = model(x).float()
            loss += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
    model.train()
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
