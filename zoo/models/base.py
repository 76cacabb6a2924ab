from __future__ import annotations

import torch
import torch.nn as nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


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
