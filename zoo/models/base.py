from __future__ import annotations

import math
import numbers

import torch
import torch.nn as nn

from ..errors import ZooError

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def _positive_ints(v) -> bool:
    return isinstance(v, tuple) and all(isinstance(x, numbers.Integral) and not isinstance(x, bool) and x > 0
                                        for x in v)


def probability(v) -> bool:
    """A dropout rate: a finite number in [0, 1) (1 would zero every activation; NaN fails the comparison)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v < 1


def check_config(cfg, rules: dict) -> None:
    """Validate a family's config dataclass before any layer is built: `rules` maps a field to (test, what it must
    be). Every bad field is named in one ZooError, so `--model-opt dropout=2.0` fails before data or a run folder."""
    bad = [f"{k}={getattr(cfg, k)!r} ({what})" for k, (ok, what) in rules.items() if not ok(getattr(cfg, k))]
    if bad:
        raise ZooError(f"{type(cfg).__name__.removesuffix('Config')} option(s) out of range: " + "; ".join(bad))


# Rules shared by the families.
WIDTHS = (_positive_ints, "positive integers, e.g. (64, 128)")
DROPOUT = (probability, "a probability in [0, 1)")
ACT = (lambda v: v in ACTIVATIONS, f"one of {', '.join(ACTIVATIONS)}")


def finite_positive(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0


class ZooModel(nn.Module):
    """Common surface of every family: features/head split, classifier reset, stages for freezing.

    The classifier is always the attribute `fc` (torchvision's name, so ResNet state dicts
    interchange); subclasses implement `forward_features` and `stages`.
    """

    def __init__(self):
        super().__init__()
        self.head_scale = 1.0  # ResNet-9 scales its logits

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(self.forward_features(x))
        return logits * self.head_scale if self.head_scale != 1.0 else logits

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        old = self.fc
        self.fc = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        self.num_classes = num_classes

    def stages(self) -> list[nn.Module]:
        """Trainable groups from input to output; the last one is the classifier."""
        raise NotImplementedError  # pragma: no cover

    def freeze(self, train_last: int) -> None:
        """Freeze every stage but the last `train_last` (BatchNorm statistics of frozen stages stay fixed too)."""
        stages = self.stages()
        for i, stage in enumerate(stages):
            trainable = i >= len(stages) - train_last
            for p in stage.parameters():
                p.requires_grad_(trainable)
            stage.zoo_frozen = not trainable

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():  # frozen stages keep their BatchNorm running statistics
            if getattr(m, "zoo_frozen", False):
                m.eval()
        return self


def conv_out(size: int, kernel: int, padding: int = 0, stride: int = 1) -> int:
    return (size + 2 * padding - kernel) // stride + 1
