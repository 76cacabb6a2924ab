"""ResNets: torchvision-compatible BasicBlock ResNet-18 (CIFAR and ImageNet stems) and DAWNBench ResNet-9."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import ZooError
from ..registry import build, register_model
from .base import DROPOUT, ZooModel, _positive_ints, check_config, finite_positive


class BasicBlock(nn.Module):
    """torchvision's BasicBlock, with the same attribute names so state dicts interchange."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


@dataclass(frozen=True)
class ResNetConfig:
    layers: tuple[int, ...] = (2, 2, 2, 2)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem: str = "cifar"  # cifar: 3x3 conv, no max-pool | imagenet: 7x7/2 conv + 3x3/2 max-pool
    dropout: float = 0.0  # before the fc

    def __post_init__(self):
        four = "four positive integers (torchvision's layer1..layer4)"
        check_config(self, {"layers": (lambda v: _positive_ints(v) and len(v) == 4, four),
                            "widths": (lambda v: _positive_ints(v) and len(v) == 4, four),
                            "stem": (lambda v: v in ("cifar", "imagenet"), "cifar or imagenet"), "dropout": DROPOUT})


class ResNet(ZooModel):
    def __init__(self, cfg: ResNetConfig, *, num_classes: int, in_chans: int, img_size: int):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        w0 = cfg.widths[0]
        if cfg.stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, w0, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        elif cfg.stem == "cifar":
            self.conv1 = nn.Conv2d(in_chans, w0, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            raise ZooError(f"ResNet: stem must be cifar|imagenet, got {cfg.stem!r}")
        self.bn1 = nn.BatchNorm2d(w0)
        self.relu = nn.ReLU(inplace=True)
        if len(cfg.layers) != 4 or len(cfg.widths) != 4:
            raise ZooError("ResNet: layers and widths need four stages (torchvision's layer1..layer4)")
        c_in = w0
        for i, (n, w) in enumerate(zip(cfg.layers, cfg.widths, strict=True)):
            blocks = [BasicBlock(c_in, w, 1 if i == 0 else 2)] + [BasicBlock(w, w) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            c_in = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()
        self.fc = nn.Linear(c_in, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.drop(torch.flatten(self.avgpool(x), 1))

    def stages(self):
        stem = nn.ModuleList([self.conv1, self.bn1])
        return [stem, self.layer1, self.layer2, self.layer3, self.layer4, self.fc]


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.res1, self.res2 = conv_bn(c, c), conv_bn(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res2(self.res1(x))


@dataclass(frozen=True)
class ResNet9Config:
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    scale: float = 0.125  # logit scaling from the DAWNBench recipe

    def __post_init__(self):
        check_config(self, {"widths": (lambda v: _positive_ints(v) and len(v) == 4, "four positive integers"),
                            "scale": (finite_positive, "a finite number > 0")})


class ResNet9(ZooModel):
    """prep 64 -> layer1 128 (+res) -> layer2 256 -> layer3 512 (+res) -> global max pool -> fc."""

    def __init__(self, cfg: ResNet9Config, *, num_classes: int, in_chans: int, img_size: int):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        w = cfg.widths
        self.prep = conv_bn(in_chans, w[0])
        self.layer1 = nn.Sequential(conv_bn(w[0], w[1]), nn.MaxPool2d(2), Residual(w[1]))
        self.layer2 = nn.Sequential(conv_bn(w[1], w[2]), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(conv_bn(w[2], w[3]), nn.MaxPool2d(2), Residual(w[3]))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(w[3], num_classes, bias=False)
        self.head_scale = cfg.scale

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.layer3(self.layer2(self.layer1(self.prep(x))))), 1)

    def stages(self):
        return [self.prep, self.layer1, self.layer2, self.layer3, self.fc]


@register_model(dataset="cifar10")
def resnet9(**kw):
    """DAWNBench ResNet-9."""
    return build(ResNet9, ResNet9Config(), **kw)


@register_model(dataset="cifar10")
def resnet18(**kw):
    """CIFAR ResNet-18: 3x3 stem, no max-pool, BasicBlocks 2-2-2-2."""
    return build(ResNet, ResNetConfig(stem="cifar"), **kw)


@register_model(dataset="cifar10")
def resnet18_tv(**kw):
    """torchvision's ImageNet ResNet-18 topology (same state-dict keys), for fine-tuning ImageNet weights."""
    return build(ResNet, ResNetConfig(stem="imagenet"), **kw)
