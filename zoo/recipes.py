"""Training recipes are data: a name -> hyper-parameters table. Overrides replace any field."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields, replace

from .data.native import Augment
from .errors import ZooError, suggest
from .registry import model_family

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
# No recipe here goes past 0.4, and every optimiser offered diverges long before 10; a value like 1e308 is a typo that
# would turn the weights into inf within a step.
MAX_LR = 10.0


def _of_type(value, kind: str) -> bool:
    """Whether a field value has its declared type (`kind` is the annotation's text: `from __future__ import
    annotations`). bool is an int to Python, not to a recipe; an int is fine for a float field."""
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "dict":
        return isinstance(value, dict)
    return True


_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "dict": "a dict of model options",
               "str": "a name"}


@dataclass(frozen=True)
class Recipe:
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 10
    weight_decay: float = 0.0  # the "L2" variants
    momentum: float = 0.9  # sgd
    nesterov: bool = False
    schedule: str = "constant"  # constant | step | cosine | onecycle
    warmup_epochs: float = 0.0
    step_epochs: int = 10  # step schedule: multiply by gamma every step_epochs
    gamma: float = 0.1
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max gradient norm (0: off)
    augment: str = "auto"  # auto: crop+flip for colour datasets, small crop for MNIST
    patience: int = 0  # early stopping on validation accuracy (0: off)
    val_fraction: float = 0.1  # carved from train when the dataset has no validation split
    ema: float = 0.0  # decay of a per-step moving average of the weights (0: off); what validates and ships
    model: dict = field(default_factory=dict)  # model config overrides, e.g. {"dropout": 0.2}

    def __post_init__(self):
        """Bad values fail here, naming the field, before any data is read or a run folder is made."""
        kinds = {f.name: f.type for f in fields(self)}
        # Types first (the comparisons below assume numbers), then values. A float flag must also be finite:
        # argparse's float() takes "inf" and "nan", and e.g. warmup_epochs=inf trained every step at LR 0.
        # (augment may also be an Augment or a dict, used as given: Augment.parse below checks it.)
        mistyped = [k for k, t in kinds.items() if k != "augment" and not _of_type(getattr(self, k), t)]
        if mistyped:
            raise ZooError("invalid recipe value(s): " + ", ".join(
                f"{k}={getattr(self, k)!r} (expected {_TYPE_WORDS.get(kinds[k], kinds[k])})" for k in mistyped))
        for k, t in kinds.items():  # numpy scalars become plain numbers: recipes are written to JSON
            if t in ("int", "float"):
                try:
                    object.__setattr__(self, k, (int if t == "int" else float)(getattr(self, k)))
                except OverflowError:  # an int past float's range (lr=10**400)
                    raise ZooError(f"invalid recipe value: {k}={getattr(self, k)!r} (not a finite float)") from None
        infinite = [k for k, t in kinds.items() if t == "float" and not math.isfinite(getattr(self, k))]
        if infinite:
            raise ZooError("invalid recipe value(s): " + ", ".join(f"{k}={getattr(self, k)!r}" for k in infinite)
                           + " (every float must be a finite number)")
        checks = {
            "optimizer": self.optimizer in OPTIMIZERS, "schedule": self.schedule in SCHEDULES,
            "lr": 0 < self.lr <= MAX_LR, "batch_size": self.batch_size >= 1, "epochs": self.epochs >= 1,
            "weight_decay": self.weight_decay >= 0, "momentum": 0 <= self.momentum < 1,
            "nesterov": not (self.nesterov and self.momentum == 0),
            "warmup_epochs": self.warmup_epochs >= 0, "step_epochs": self.step_epochs >= 1, "gamma": self.gamma > 0,
            "label_smoothing": 0 <= self.label_smoothing < 1, "grad_clip": self.grad_clip >= 0,
            "patience": self.patience >= 0, "val_fraction": 0 <= self.val_fraction < 1,
            "ema": 0 <= self.ema < 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ZooError("invalid recipe value(s): " + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
                           + f" (optimizer: {'|'.join(OPTIMIZERS)}; schedule: {'|'.join(SCHEDULES)}; lr in (0, "
                           f"{MAX_LR:g}]; gamma > 0; "
                           "batch_size, epochs, step_epochs >= 1; momentum, label_smoothing, val_fraction, ema in [0, 1); "
                           "nesterov needs momentum > 0; the rest >= 0)")
        if self.augment != "auto":
            Augment.parse(self.augment)  # unknown preset -> ZooError with the valid names

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# What each field means (the `zoo train` flags are generated from the fields, with these as their help).
FIELD_HELP = {
    "optimizer": "optimizer", "lr": "base learning rate", "batch_size": "batch size (per process under torchrun)",
    "weight_decay": "L2 weight decay on conv/linear weights (not on biases or BatchNorm)",
    "momentum": "SGD momentum", "nesterov": "SGD Nesterov momentum", "schedule": "learning-rate schedule",
    "warmup_epochs": "linear warm-up, in epochs (fractions allowed)",
    "step_epochs": "step schedule: multiply the LR by --gamma every this many epochs",
    "gamma": "step schedule: LR factor", "label_smoothing": "label smoothing of the cross-entropy",
    "grad_clip": "clip the gradient norm to this (0: off)",
    "augment": "none, flip, crop, crop_flip, crop_flip_cutout, mnist, auto (crop+flip; no flip for digits)",
    "patience": "early stopping: epochs without a better validation accuracy (0: off)",
    "val_fraction": "validation share carved from train when the dataset has no validation split",
    "ema": "keep an exponential moving average of the weights, updated every step with this decay (0: off; e.g. "
           "0.999 averages over ~1000 steps); validation, the test evaluation and the saved weights use it",
}

R = Recipe
RECIPES: dict[str, Recipe] = {
    # The classic settings people compare.
    "adam": R(),
    "adam_lr1e-2": R(lr=1e-2),
    "sgd": R(optimizer="sgd", lr=1e-2, momentum=0.9),
    "l2_1e-5": R(weight_decay=1e-5),
    "l2_5e-4": R(weight_decay=5e-4),
    "dropout": R(model={"dropout": 0.2}),
    "batchnorm": R(model={"bn": True}),
    "no_batchnorm": R(model={"bn": False}),
    "resnet_base": R(optimizer="adam", lr=1e-3, batch_size=128, epochs=15, weight_decay=5e-4),
    "resnet_low_lr": R(optimizer="adam", lr=1e-4, batch_size=128, epochs=15, weight_decay=5e-4),
    "resnet_sgd": R(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, batch_size=128, epochs=15,
                    weight_decay=5e-4, schedule="cosine"),
    # Fast recipes, tuned for accuracy per second of training.
    "fast_lenet": R(optimizer="adamw", lr=3e-3, batch_size=256, epochs=20, weight_decay=5e-4, schedule="onecycle",
                    label_smoothing=0.05, val_fraction=0.02),
    "fast_mlp": R(optimizer="adamw", lr=2e-3, batch_size=256, epochs=20, weight_decay=1e-4, schedule="onecycle",
                  val_fraction=0.02),
    "fast_convnet": R(optimizer="sgd", lr=0.05, nesterov=True, batch_size=256, epochs=40, weight_decay=5e-4,
                      schedule="onecycle", label_smoothing=0.1, augment="crop_flip_cutout", val_fraction=0.02,
                      model={"dropout": 0.3}),
    "fast_resnet9": R(optimizer="sgd", lr=0.4, nesterov=True, batch_size=512, epochs=24, weight_decay=5e-4,
                      schedule="onecycle", label_smoothing=0.2, augment="crop_flip_cutout", val_fraction=0.02),
    "fast_resnet18": R(optimizer="sgd", lr=0.2, nesterov=True, batch_size=512, epochs=60, weight_decay=5e-4,
                       schedule="onecycle", label_smoothing=0.1, augment="crop_flip_cutout", val_fraction=0.02),
}

FAST_RECIPE = {"lenet": "fast_lenet", "mlp": "fast_mlp", "convnet": "fast_convnet", "resnet": "fast_resnet18"}


def default_recipe(model_name: str) -> str:
    if model_name == "resnet9":
        return "fast_resnet9"
    return FAST_RECIPE[model_family(model_name)]


def get_recipe(name: str | Recipe, **overrides) -> Recipe:
    if isinstance(name, Recipe):
        base = name
    elif name in RECIPES:
        base = RECIPES[name]
    else:
        raise ZooError(f"unknown recipe {name!r}; {suggest(str(name), RECIPES, 'recipes')}")
    valid = {f.name for f in fields(Recipe)}
    bad = set(overrides) - valid
    if bad:
        raise ZooError(f"unknown recipe field(s) {', '.join(sorted(bad))}; valid: {', '.join(sorted(valid))}")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
