"""LeNet-5 and its variants (pooling, activation, BatchNorm, dropout, widened)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import ZooError
from ..registry import build, register_model
from .base import ACT, ACTIVATIONS, DROPOUT, WIDTHS, ZooModel, _positive_ints, check_config, conv_out


@dataclass(frozen=True)
class LeNetConfig:
    channels: tuple[int, ...] = (6, 16)
    kernels: tuple[int, ...] = (5, 5)
    fc: tuple[int, ...] = (120, 84)
    pool: str = "avg"  # avg | max
    act: str = "relu"  # relu | tanh
    bn: bool = False  # BatchNorm after each conv, before the activation
    bn_after_pool: bool = False  # put the conv BatchNorm after the pool instead (lenet5_wide)
    bn_fc: bool = False  # BatchNorm after each hidden fc
    dropout: float = 0.0  # after each hidden fc
    pad_to: int = 32  # LeNet expects 32x32: smaller inputs (MNIST 28) get padding on the first conv

    def __post_init__(self):
        check_config(self, {
            "channels": WIDTHS, "kernels": WIDTHS, "fc": (_positive_ints, "positive integers (or ())"),
            "pool": (lambda v: v in ("avg", "max"), "avg or max"), "act": ACT, "dropout": DROPOUT,
            "pad_to": (lambda v: isinstance(v, int) and 0 <= v <= 1024, "an image size, 0..1024"),
        })
        if len(self.channels) != len(self.kernels):
            raise ZooError(f"LeNet options channels={self.channels!r} and kernels={self.kernels!r}: one kernel size "
                           "per conv block")


class LeNet(ZooModel):
    def __init__(self, cfg: LeNetConfig, *, num_classes: int, in_chans: int, img_size: int):
        super().__init__()
        if cfg.pool not in ("avg", "max") or cfg.act not in ACTIVATIONS:
            raise ZooError(f"LeNet: pool must be avg|max and act relu|tanh, got {cfg.pool}, {cfg.act}")
        self.cfg, self.num_classes = cfg, num_classes
        act, pool = ACTIVATIONS[cfg.act], nn.AvgPool2d if cfg.pool == "avg" else nn.MaxPool2d
        blocks, c_in, size = [], in_chans, img_size
        for i, (c, k) in enumerate(zip(cfg.channels, cfg.kernels, strict=True)):
            pad = max(0, (cfg.pad_to - img_size) // 2) if i == 0 else 0
            layers = [nn.Conv2d(c_in, c, k, padding=pad)]
            if cfg.bn and not cfg.bn_after_pool:
                layers.append(nn.BatchNorm2d(c))
            layers += [act(), pool(2)]
            if cfg.bn and cfg.bn_after_pool:
                layers.append(nn.BatchNorm2d(c))
            blocks.append(nn.Sequential(*layers))
            c_in, size = c, conv_out(size, k, pad) // 2
            if size < 1:
                raise ZooError(f"LeNet: input size {img_size} is too small for {len(cfg.channels)} conv blocks")
        self.features = nn.Sequential(*blocks)
        fcs, n = [], c_in * size * size
        for h in cfg.fc:
            layers = [nn.Linear(n, h)] + ([nn.BatchNorm1d(h)] if cfg.bn_fc else []) + [act()]
            if cfg.dropout:
                layers.append(nn.Dropout(cfg.dropout))
            fcs.append(nn.Sequential(*layers))
            n = h
        self.fcs = nn.Sequential(*fcs)
        self.fc = nn.Linear(n, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fcs(torch.flatten(self.features(x), 1))

    def stages(self):
        return [*self.features, *self.fcs, self.fc]


@register_model(dataset="mnist")
def lenet5(**kw):
    """LeNet-5 with average pooling and ReLU."""
    return build(LeNet, LeNetConfig(pool="avg"), **kw)


@register_model(dataset="mnist")
def lenet5_max(**kw):
    """LeNet-5 with max pooling."""
    return build(LeNet, LeNetConfig(pool="max"), **kw)


@register_model(dataset="mnist")
def lenet5_bn(**kw):
    """LeNet-5 (max pool) with BatchNorm after each conv and hidden fc."""
    return build(LeNet, LeNetConfig(pool="max", bn=True, bn_fc=True), **kw)


@register_model(dataset="mnist")
def lenet5_dropout(**kw):
    """LeNet-5 (max pool) with dropout 0.2 after each hidden fc."""
    return build(LeNet, LeNetConfig(pool="max", dropout=0.2), **kw)


@register_model(dataset="cifar10")
def lenet5_wide(**kw):
    """conv3x3(32) -> maxpool -> BN -> conv4x4(64) -> maxpool -> BN -> fc 600 -> 200 -> classes."""
    cfg = LeNetConfig(channels=(32, 64), kernels=(3, 4), fc=(600, 200), pool="max", bn=True, bn_after_pool=True)
    return build(LeNet, cfg, **kw)
