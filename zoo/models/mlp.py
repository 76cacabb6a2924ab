"""Multi-layer perceptrons over flattened pixels."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..registry import build, register_model
from .base import ACT, ACTIVATIONS, DROPOUT, ZooModel, _positive_ints, check_config


@dataclass(frozen=True)
class MLPConfig:
    hidden: tuple[int, ...] = (64,)
    act: str = "relu"
    dropout: float = 0.0  # after each hidden layer

    def __post_init__(self):
        check_config(self, {"hidden": (_positive_ints, "positive integers (or ())"), "act": ACT, "dropout": DROPOUT})


class MLP(ZooModel):
    def __init__(self, cfg: MLPConfig, *, num_classes: int, in_chans: int, img_size: int):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        layers, n = [], in_chans * img_size * img_size
        for h in cfg.hidden:
            block = [nn.Linear(n, h), ACTIVATIONS[cfg.act]()] + ([nn.Dropout(cfg.dropout)] if cfg.dropout else [])
            layers.append(nn.Sequential(*block))
            n = h
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(n, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.flatten(x, 1))

    def stages(self):
        return [*self.layers, self.fc]


@register_model(dataset="mnist")
def mlp2(**kw):
    """in -> 64 -> classes."""
    return build(MLP, MLPConfig(hidden=(64,)), **kw)


@register_model(dataset="mnist")
def mlp4(**kw):
    """in -> 128 -> 128 -> 128 -> classes."""
    return build(MLP, MLPConfig(hidden=(128, 128, 128)), **kw)
