"""Model registry: a few-line entrypoint per variant, one class per family, variants are config.

    @register_model(dataset="mnist")
    def lenet5_bn(**kw):
        return build(LeNet, LeNetConfig(bn=True), **kw)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import numbers
from collections.abc import Callable

import torch.nn as nn

from .data.specs import dataset_spec
from .errors import ZooError, suggest

_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}
_DEFAULT_DATASET: dict[str, str] = {}
_FAMILY: dict[str, str] = {}


def register_model(*, dataset: str):
    """Register `fn` under its own name; `dataset` is what `zoo.load(name)` means by default."""

    def wrap(fn):
        if fn.__name__ in _ENTRYPOINTS:  # a second definition would silently replace the first one's weights' model
            raise ZooError(f"register_model: {fn.__name__!r} is already registered (by "
                           f"{_ENTRYPOINTS[fn.__name__].__module__}); choose another name")
        _ENTRYPOINTS[fn.__name__] = fn
        _DEFAULT_DATASET[fn.__name__] = dataset
        _FAMILY[fn.__name__] = fn.__module__.rsplit(".", 1)[-1]
        return fn

    return wrap


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; `pattern` is a shell-style wildcard like 'lenet5*'."""
    if pattern is not None and not isinstance(pattern, str):  # fnmatch would raise a TypeError about os.PathLike
        raise ZooError(f"list_models: pattern must be a wildcard string like 'lenet5*', got {pattern!r}")
    names = sorted(_ENTRYPOINTS)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def model_family(name: str) -> str:
    _check_name(name)
    return _FAMILY[name]


def default_dataset(name: str) -> str:
    _check_name(name)
    return _DEFAULT_DATASET[name]


def _check_name(name: str) -> None:
    if name not in _ENTRYPOINTS:
        raise ZooError(f"unknown model {name!r}; {suggest(name, _ENTRYPOINTS, 'available models')}")


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    img_size: int | None = None,
    dataset: str | None = None,
    init: str | None = None,
    **overrides,
) -> nn.Module:
    """Build a registered model with fresh weights (`zoo.create_model` adds `pretrained=True`).

    Shape arguments default to `dataset` (or the model's default dataset). `overrides` replace
    fields of the family's config dataclass (e.g. `dropout=0.3`). `init="xavier"` re-initialises
    conv/linear weights; the default keeps PyTorch's initialisation.
    """
    _check_name(name)
    spec = dataset_spec(dataset or _DEFAULT_DATASET[name])
    # None means "the dataset's"; anything else is checked (0 used to mean the default too: num_classes=0 built a
    # 10-class head without a word, and weights whose metadata said 0 channels built a model for the dataset's).
    shape = {k: _shape_arg(k, v, default) for k, v, default in (
        ("num_classes", num_classes, spec.num_classes), ("in_chans", in_chans, spec.in_chans),
        ("img_size", img_size, spec.img_size))}
    try:
        model = _ENTRYPOINTS[name](**shape, **overrides)
    except (RuntimeError, MemoryError) as e:  # e.g. widths from a hostile weights file: an allocation that fails
        raise ZooError(f"cannot build {name} with {shape} and options {overrides}: "
                       f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    model.zoo_name = name
    if init is not None:
        init_weights(model, init)
    return model


# Bounds on the shape arguments: far above any dataset zoo knows (STL-10 is 96 px, CIFAR-100 has 100 classes) and
# low enough that a typo or a hostile weights file's metadata cannot ask for a model of many gigabytes.
SHAPE_LIMITS = {"num_classes": (1, 100_000), "in_chans": (1, 16), "img_size": (8, 1024)}


def _shape_arg(key: str, value, default: int) -> int:
    if value is None:
        return default
    lo, hi = SHAPE_LIMITS[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise ZooError(f"{key} must be an integer from {lo} to {hi}, got {value!r}")
    return int(value)


def build(cls, cfg, *, num_classes: int, in_chans: int, img_size: int, **overrides) -> nn.Module:
    """Shared body of every entrypoint: apply config overrides, then construct the family class."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = set(overrides) - fields
    if unknown:
        raise ZooError(
            f"unknown option(s) {', '.join(sorted(unknown))} for {cls.__name__}; "
            f"its config fields are: {', '.join(sorted(fields))}"
        )
    if in_chans < 1 or num_classes < 1 or img_size < 8:
        raise ZooError(f"bad shape: in_chans={in_chans}, num_classes={num_classes}, img_size={img_size}")
    overrides = {k: _typed(cls, k, getattr(cfg, k), v) for k, v in overrides.items()}
    return cls(dataclasses.replace(cfg, **overrides), num_classes=num_classes, in_chans=in_chans, img_size=img_size)


def _typed(cls, key: str, default, value):
    """A config override of the field's type (ints for float fields, lists for tuple fields), or one clear error."""
    kind = type(default)
    if kind is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind in (int, float):  # bool is an int to Python, not to a config
        ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ZooError(f"{cls.__name__} option {key}={value!r}: expected {kind.__name__} (default {default!r})")
    return value


def init_weights(model: nn.Module, scheme: str) -> None:
    if scheme == "default":
        return
    if scheme != "xavier":
        raise ZooError(f"unknown init {scheme!r}; valid: default, xavier")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
