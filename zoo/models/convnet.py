"""A widened two-conv BatchNorm ConvNet."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..registry import build, register_model
from .base import DROPOUT, WIDTHS, ZooModel, _positive_ints, check_config


@dataclass(frozen=True)
class ConvNetConfig:
    channels: tuple[int, ...] = (64, 128)
    pool: int = 2
    fc: tuple[int, ...] = (512,)
    dropout: float = 0.0  # after each hidden fc

    def __post_init__(self):
        check_config(self, {"channels": WIDTHS, "fc": (_positive_ints, "positive integers (or ())"),
                            "pool": (lambda v: isinstance(v, int) and v >= 1, "a pooling size >= 1"),
                            "dropout": DROPOUT})


class ConvNet(ZooModel):
    def __init__(self, cfg: ConvNetConfig, *, num_classes: int, in_chans: int, img_size: int):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        blocks, c_in = [], in_chans
        for c in cfg.channels:
            blocks.append(nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()))
            c_in = c
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AvgPool2d(cfg.pool)
        fcs, n = [], c_in * (img_size // cfg.pool) ** 2
        for h in cfg.fc:
            fcs.append(nn.Sequential(nn.Linear(n, h), nn.ReLU(), *([nn.Dropout(cfg.dropout)] if cfg.dropout else [])))
            n = h
        self.fcs = nn.Sequential(*fcs)
        self.fc = nn.Linear(n, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fcs(torch.flatten(self.pool(self.features(x)), 1))

    def stages(self):
        return [*self.features, *self.fcs, self.fc]


@register_model(dataset="cifar10")
def convnet_bn(**kw):
    """conv3x3(64)+BN+ReLU -> conv3x3(128)+BN+ReLU -> avgpool 2 -> fc 512 -> classes."""
    return build(ConvNet, ConvNetConfig(), **kw)
