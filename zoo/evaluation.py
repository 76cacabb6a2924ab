"""One evaluation harness for every backend: torch (CPU/CUDA), TorchScript and ONNX Runtime."""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import metrics
from .artifacts import to_onnx, to_torchscript
from .data import loader
from .data.specs import flips_keep_labels
from .errors import ZooError, suggest
from .pretrained import load
from .runtime import EXPORTED_SUFFIXES, load_exported

EVAL_BACKENDS = ("torch", "torchscript", "onnxruntime", "auto")
# backend="auto": the fastest backend measured by bench/test_inference.py on each device kind
# (see README, "Benchmarks"): ONNX Runtime on CPU, eager torch on CUDA.
AUTO_BACKEND = {"cpu": "onnxruntime", "cuda": "torch"}


@dataclass
class EvalResult:
    model: str
    dataset: str
    split: str
    backend: str
    device: str
    num_samples: int
    classes: list[str]
    top1: float
    top5: float | None
    loss: float
    confusion: list[list[int]]
    per_class_accuracy: list[float]
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    macro: dict[str, float]
    weighted: dict[str, float]
    misclassified: list[dict[str, Any]]
    throughput: dict[str, float]
    tta: bool = False  # whether `top1_flip_tta` was measured; it never changes `top1` or any other figure
    labels: str = "fine"  # the label set (CIFAR-100: fine or coarse)
    top1_flip_tta: float | None = None  # with tta=True: top-1 of the image's and its mirror's averaged logits
    # Names of parameters/buffers holding NaN or Inf, and the number of images whose logits did: a broken model's
    # argmax is class 0 everywhere, which would print as a plausible 9.80% on a 10-class test set.
    nonfinite_weights: list[str] = field(default_factory=list)
    nonfinite_logits: int = 0
    logits: np.ndarray | None = field(default=None, repr=False)

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(1)

    def __repr__(self) -> str:
        # The dataclass repr would print the confusion matrix and every misclassified image (20 KB for CIFAR-100);
        # the figures a reader looks for first fit one line, and to_dict() / summary() have the rest.
        tta = f", top1_flip_tta={self.top1_flip_tta:.4f}" if self.top1_flip_tta is not None else ""
        flag = f", problems={len(self.problems)}" if self.problems else ""
        return (f"EvalResult(model={self.model!r}, dataset={self.dataset!r}, split={self.split!r}, "
                f"backend={self.backend!r}, n={self.num_samples}, top1={self.top1:.4f}{tta}, loss={self.loss:.4f}"
                f"{flag})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("logits")
        return d

    def save_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1))

    @property
    def problems(self) -> list[str]:
        """What makes these numbers untrustworthy, one sentence each (empty: nothing known)."""
        out = []
        if self.nonfinite_weights:
            names = ", ".join(self.nonfinite_weights[:5]) + (", ..." if len(self.nonfinite_weights) > 5 else "")
            out.append(f"{len(self.nonfinite_weights)} parameter/buffer tensors of {self.model} hold NaN or Inf "
                       f"({names}): its figures cannot be trusted")
        if self.nonfinite_logits:
            out.append(f"the logits of {self.nonfinite_logits} of {self.num_samples} images are NaN or Inf")
        return out

    def summary(self) -> str:
        t5 = f"  top-5 {self.top5 * 100:.2f}%" if self.top5 is not None else ""
        # Labelled as its own figure: flip TTA never stands in for the plain top-1.
        tta = f"  flip-TTA top-1 {self.top1_flip_tta * 100:.2f}%" if self.top1_flip_tta is not None else ""
        tp = self.throughput
        warn = "".join(f"\n  WARNING: {p}" for p in self.problems)
        return (f"{self.model} on {self.dataset}/{self.split} [{self.backend}, {self.device}]: "
                f"top-1 {self.top1 * 100:.2f}%{t5}{tta}  loss {self.loss:.4f}  "
                f"macro-F1 {self.macro['f1'] * 100:.2f}%  "
                f"{tp['images_per_s']:.0f} img/s (batch {tp['batch_size']}, p50 {tp['latency_p50_ms']:.2f} ms, "
                f"p95 {tp['latency_p95_ms']:.2f} ms){warn}")


def nonfinite_tensors(model_or_runner) -> list[str]:
    """Names of the float parameters and buffers holding NaN or Inf: of an nn.Module (also TorchScript), of an
    exported TorchScript file's module, or of an exported ONNX file's initializers."""
    module = model_or_runner if isinstance(model_or_runner, nn.Module) else getattr(model_or_runner, "module", None)
    if isinstance(module, nn.Module):  # torch.jit.ScriptModule is one too
        named = [*module.named_parameters(), *module.named_buffers()]
        return [n for n, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    path = getattr(model_or_runner, "path", None)
    if path is not None and Path(path).suffix == ".onnx" and Path(path).exists():
        try:
            import onnx
            from onnx import numpy_helper
        except ImportError:  # the logits check below still catches a model that outputs NaN
            return []
        graph = onnx.load(str(path)).graph
        out = []
        for init in graph.initializer:
            a = numpy_helper.to_array(init)
            if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
                out.append(init.name)
        return out
    return []


def runner_for(model_or_path, backend: str, device: str, example: torch.Tensor):
    """A callable: float NCHW batch (on `device`) -> logits tensor. Also returns the model's name, its meta and
    the names of its non-finite parameters/buffers (checked on what runs: the module, or the exported file)."""
    if isinstance(model_or_path, (str, os.PathLike)):
        p = Path(model_or_path)
        if p.suffix in EXPORTED_SUFFIXES:
            fn = load_exported(p, device=device)
            return fn, fn.meta.get("tag", p.stem), fn.meta, nonfinite_tensors(fn)
        model_or_path = load(model_or_path)
    model: nn.Module = model_or_path
    meta = getattr(model, "zoo_meta", {})
    name = meta.get("tag") or getattr(model, "zoo_name", type(model).__name__)
    model = model.eval().to(device)
    bad = nonfinite_tensors(model)  # before export: the temporary artifact below is gone once loaded
    if backend == "torch":
        return model, name, meta, bad
    # The artifact only lives until it is loaded: ORT sessions and TorchScript modules hold the model in memory.
    with tempfile.TemporaryDirectory(prefix="zoo-eval-") as tmp:
        if backend == "torchscript":
            path = to_torchscript(model, example.cpu(), Path(tmp) / "model.pt", verify=False, meta=meta)
        else:
            path = to_onnx(model.cpu(), example.cpu(), Path(tmp) / "model.onnx", verify=False, meta=meta)
            model.to(device)
        return load_exported(path, device=device), name, meta, bad


def artifact_backend(model_or_path) -> str | None:
    """The runtime an exported file runs on (.onnx: onnxruntime, .pt/.ts: torchscript); None for anything else."""
    if not isinstance(model_or_path, (str, os.PathLike)) or Path(model_or_path).suffix not in EXPORTED_SUFFIXES:
        return None
    return "onnxruntime" if Path(model_or_path).suffix == ".onnx" else "torchscript"


def evaluate(model_or_path, dataset: str, *, backend: str | None = None, device: str = "cpu", batch_size: int = 1024,
             split: str = "test", tta: bool = False, max_misclassified: int = 200, warmup: int = 2,
             labels: str | None = None) -> EvalResult:
    """Evaluate a model (nn.Module, registry tag, weights file, or exported .onnx/.pt) on an ingested split.

    backend: torch | torchscript | onnxruntime | auto (the fastest measured for the device). Default: torch for
    a model, tag or weights file; an exported file runs on its own runtime, and only there.
    labels: "fine" or "coarse" (CIFAR-100); default: what the model was trained on (its meta), else fine.
    tta=True: horizontal-flip test-time augmentation, reported as its own figure: `top1_flip_tta` is the top-1 of
    the average of each image's and its mirror's logits (one extra forward per batch, outside the timed region);
    `top1` and every other metric stay single-view. Refused (ZooError) on datasets whose labels change under a
    flip (digits), where it would measure mirrored digits.
    A model with NaN/Inf parameters, buffers or logits is evaluated, flagged in the result
    (`nonfinite_weights`, `nonfinite_logits`) and warned about once (RuntimeWarning)."""
    if not isinstance(model_or_path, nn.Module | str | os.PathLike):
        raise ZooError(f"evaluate: expected an nn.Module or the path of an exported model, got "
                       f"{type(model_or_path).__name__}")
    if backend is not None and backend not in EVAL_BACKENDS:
        raise ZooError(f"unknown backend {backend!r}; {suggest(backend, EVAL_BACKENDS)}")
    own = artifact_backend(model_or_path)
    if own and backend not in (None, own, "auto"):  # a result must name the runtime that produced it
        raise ZooError(f"{model_or_path} is an exported {own} model and runs on backend {own!r} only, not "
                       f"{backend!r}; to compare backends, evaluate its weights (a tag or .safetensors file)")
    backend = own or backend or "torch"
    try:  # "bogus", 5, "meta": one error naming the argument, not a RuntimeError from deep in torch
        kind = torch.device(device).type if isinstance(device, str) else None
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ZooError(f"device must be 'cpu' or 'cuda' (optionally 'cuda:N'), got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ZooError("device 'cuda' requested but CUDA is not available")
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed batch shape: pick the fastest conv algorithms once
    if backend == "auto":
        backend = AUTO_BACKEND["cuda" if device.startswith("cuda") else "cpu"]

    def split_loader(which: str):
        return loader(dataset, split, batch_size, augment=None, shuffle=False, labels=which,
                      backend="gpu" if device.startswith("cuda") else "native", device=device)

    label_set = labels or "fine"
    ld = split_loader(label_set)
    _, h, w, c = ld.data.images.shape
    if tta and not flips_keep_labels(dataset, c):  # before the model is loaded or run: nothing to wait for
        raise ZooError(f"tta=True (--tta): {dataset}'s labels change under a horizontal flip (a mirrored digit is "
                       "another symbol or none), so flip TTA would report a wrong accuracy; evaluate without it")
    example = torch.zeros(1, c, h, w, device=device)
    fn, name, meta, nonfinite = runner_for(model_or_path, backend, device, example)
    if labels is None and meta.get("labels", "fine") != "fine":  # e.g. a model of CIFAR-100's 20 superclasses
        label_set = meta["labels"]
        ld = split_loader(label_set)
    _check_compatible(meta, fn, ld, c, h, w, name)
    if isinstance(model_or_path, nn.Module):  # a bare module has no zoo_meta to check: run it once on one image
        try:
            with torch.inference_mode():
                probe = fn(example)
        except (RuntimeError, ValueError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ZooError(f"model {name} cannot run on {dataset} images (1 x {c} x {h} x {w}): {first}") from None
        if not (isinstance(probe, torch.Tensor) and probe.ndim == 2 and probe.shape[1] == len(ld.classes)):
            got = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
            raise ZooError(f"model {name} gives {got} for one {dataset} image; expected (1, {len(ld.classes)}) "
                           "logits")
    n_cls = len(ld.classes)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    with torch.inference_mode():
        it = iter(ld)
        first = next(it)
        for _ in range(warmup):  # warm-up: lazy init, kernel selection, ORT arena growth
            fn(first[0])
        sync()
        logits, flipped, times = [], [], []
        for x, _ in [first, *it]:
            t0 = time.perf_counter()
            out = fn(x)
            sync()
            times.append(time.perf_counter() - t0)  # throughput is the single-view model's, TTA or not
            logits.append(out.float().cpu())
            if tta:
                flipped.append(fn(x.flip(3)).float().cpu())
        sync()
    logits_t = torch.cat(logits)
    if logits_t.shape[1] != n_cls:
        raise ZooError(f"model {name} outputs {logits_t.shape[1]} classes but {dataset} has {n_cls}")
    y = torch.from_numpy(ld.data.labels.astype(np.int64))
    loss = float(F.cross_entropy(logits_t, y))
    probs = logits_t.softmax(1)
    conf, pred = probs.max(1)
    yn, pn = y.numpy(), pred.numpy()
    cm = metrics.confusion_matrix(yn, pn, n_cls)
    m = metrics.from_confusion(cm)
    wrong = np.flatnonzero(yn != pn)
    wrong = wrong[np.argsort(-conf.numpy()[wrong], kind="stable")][:max_misclassified]
    lat = np.array(times) * 1000
    top1_flip = None
    if tta:
        both = (logits_t + torch.cat(flipped)) / 2
        top1_flip = float((both.argmax(1) == y).double().mean())
    bad_logits = int((~torch.isfinite(logits_t)).any(1).sum())
    result = EvalResult(
        model=name, dataset=dataset, split=split, backend=backend, device=device, num_samples=len(yn),
        classes=list(ld.classes), top1=m["accuracy"],
        top5=metrics.topk_accuracy(logits_t.numpy(), yn, 5) if n_cls > 5 else None, loss=loss,
        confusion=cm.tolist(), per_class_accuracy=m["per_class_accuracy"], precision=m["precision"],
        recall=m["recall"], f1=m["f1"], support=m["support"], macro=m["macro"], weighted=m["weighted"],
        misclassified=[{"index": int(i), "true": int(yn[i]), "pred": int(pn[i]), "confidence": float(conf[i])}
                       for i in wrong],
        throughput={"images_per_s": len(yn) / lat.sum() * 1000, "batch_size": batch_size,
                    "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p95_ms": float(np.percentile(lat, 95))},
        tta=tta, labels=label_set, top1_flip_tta=top1_flip, nonfinite_weights=nonfinite,
        nonfinite_logits=bad_logits, logits=logits_t.numpy(),
    )
    if result.problems:  # one warning per evaluation, naming the model: the numbers above are not to be trusted
        warnings.warn(f"zoo.evaluate({name} on {dataset}/{split}): " + "; ".join(result.problems),
                      RuntimeWarning, stacklevel=2)
    return result


def _check_compatible(meta, fn, ld, c, h, w, name) -> None:
    want = meta.get("input_size")
    if want and list(want) != [c, h, w]:
        raise ZooError(f"model {name} expects input {want} (C,H,W) but {ld.data.dataset} images are {[c, h, w]}; "
                       "evaluate it on the dataset it was trained for")
    n_model = len(meta["classes"]) if meta.get("classes") else getattr(getattr(fn, "fc", None), "out_features", None)
    if n_model is not None and n_model != len(ld.classes):
        raise ZooError(f"model {name} has {n_model} classes but {ld.data.dataset} has {len(ld.classes)}; "
                       "evaluate it on the dataset it was trained for")


def compare(results: list[EvalResult]) -> dict:
    """Accuracy, prediction agreement and max |Δlogit| of each backend against the first."""
    ref = results[0]
    rows = []
    for r in results:
        rows.append({
            "backend": r.backend, "device": r.device, "top1": r.top1,
            "agreement_with_" + ref.backend: float((r.predictions == ref.predictions).mean()),
            "max_abs_logit_diff": float(np.abs(r.logits - ref.logits).max()),
            "images_per_s": r.throughput["images_per_s"],
        })
    return {"reference": ref.backend, "rows": rows}
