"""Trained models: a registry tag or a zoo weights file in, a model with its weights and `zoo_meta` out.

This module sits above the two it joins: the registry (names and builders, `zoo/registry.py`) and the weights store
(files, manifest, lookup and downloads, `zoo/weights.py`); neither of those imports the other, or this.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch.nn as nn

from . import registry
from .errors import ZooError, suggest
from .weights import load_state_dict, read_embedded_meta, read_manifest, weights_file


def resolve_tag(tag: str) -> str:
    name, _, dataset = tag.partition(".")
    if name not in registry.list_models():
        registry.default_dataset(name)  # raises the unknown-model error with suggestions
    full = f"{name}.{dataset or registry.default_dataset(name)}"
    if not dataset:  # a bare name picks a dataset: say which, so nobody evaluates MNIST weights thinking of CIFAR
        others = sorted(t for t in read_manifest() if t.startswith(f"{name}.") and t != full)
        warnings.warn(f"{name!r} means {full!r} (the model's default dataset"
                      + (f"; also trained: {', '.join(others)}" if others else "") + "); pass the full tag to choose",
                      UserWarning, stacklevel=3)
    entries = read_manifest()
    if full not in entries:
        raise ZooError(f"no trained weights for {full!r}; {suggest(full, entries, 'available weights')}")
    return full


def load(tag_or_path: str | os.PathLike) -> nn.Module:
    """A model in eval mode with trained weights and `model.zoo_meta` (classes, mean/std, metrics, ...).

    Accepts a registry tag (`lenet5_bn`, `lenet5_bn.mnist`) or the path of a `.safetensors` file
    written by `zoo train` (its metadata travels inside the file).
    """
    if not isinstance(tag_or_path, str | os.PathLike):
        raise ZooError(f"zoo.load takes a registry tag or a .safetensors path, got {type(tag_or_path).__name__}")
    p = Path(tag_or_path)
    if p.suffix == ".safetensors":
        if not p.exists():
            raise ZooError(f"weights file {p} does not exist")
        meta = read_embedded_meta(p)
        path = p
    elif p.is_file():
        raise ZooError(f"{p} is not a zoo weights file (.safetensors); exported models (.onnx, .pt) load with "
                       "zoo.load_exported")
    elif p.suffix in (".pt", ".pth", ".onnx") or any(s in str(tag_or_path) for s in ("/", os.sep)):
        # A tag never holds a path separator or a file suffix: this was meant as a file, so say that it is missing
        raise ZooError(f"{p}: no such file (zoo.load takes a registry tag or a .safetensors file)")
    else:
        tag = resolve_tag(str(tag_or_path))
        path, meta = weights_file(tag)
    c, h, _ = meta.input_size
    model = registry.create_model(meta.model, num_classes=meta.num_classes, in_chans=c, img_size=h,
                                  **meta.config_overrides)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_state_dict(path).items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # missing/unexpected keys or other shapes than its own metadata describes
        first = str(e).strip().splitlines()[0]
        raise ZooError(f"{path}: its tensors do not fit the {meta.model} its metadata describes ({first})") from None
    model.zoo_meta = meta
    return model.eval()


def create_model(name: str, *, num_classes: int | None = None, in_chans: int | None = None,
                 img_size: int | None = None, dataset: str | None = None, pretrained: bool = False,
                 init: str | None = None, **overrides) -> nn.Module:
    """Build a registered model.

    Shape arguments default to `dataset` (or the model's default dataset). `overrides` replace fields of the
    family's config dataclass (e.g. `dropout=0.3`). `init="xavier"` re-initialises conv/linear weights; the default
    keeps PyTorch's initialisation. `pretrained=True` loads the shipped weights for `name.dataset`, like `zoo.load`
    (options that would change them are refused, not dropped).
    """
    if not pretrained:
        return registry.create_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                                     dataset=dataset, init=init, **overrides)
    spec = registry.dataset_spec(dataset or registry.default_dataset(name))
    model = load(f"{name}.{spec.name}")
    if num_classes not in (None, model.zoo_meta.num_classes) or overrides or init:
        raise ZooError(f"pretrained {name}.{spec.name} has {model.zoo_meta.num_classes} classes and a fixed "
                       "config; to change the head use zoo.train(..., init='zoo:TAG')")
    return model
