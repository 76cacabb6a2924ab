"""Preprocessing that matches a model's training data, built from its metadata."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

LUMA = torch.tensor([0.299, 0.587, 0.114])  # PIL's RGB -> L weights


class Preprocess:
    """PIL image / HWC uint8 array / uint8 tensor (HWC or NHWC) -> normalised float NCHW batch.

    Resizes to the model's input size and converts to its channel count (RGB <-> gray, alpha dropped).
    """

    def __init__(self, meta: dict[str, Any]):
        self.in_chans, self.height, self.width = meta["input_size"]
        self.mean = torch.tensor(meta["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(meta["std"], dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, image) -> torch.Tensor:
        if not isinstance(image, (np.ndarray, torch.Tensor)):  # PIL image
            image = np.array(image.convert("L" if self.in_chans == 1 else "RGB"))  # a writable copy
        x = torch.as_tensor(image)
        if x.dtype != torch.uint8:
            raise TypeError(f"expected uint8 pixels, got {x.dtype}")
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim == 3:
            x = x[None]
        x = x.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[1] == 4:
            x = x[:, :3]
        if x.shape[1] != self.in_chans:  # the conversions ingest (PIL) applies: ITU-R 601 luma, gray replicated
            x = (x * LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True) if self.in_chans == 1 else x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.height, self.width):
            x = F.interpolate(x, size=(self.height, self.width), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std


def preprocess_for(model_or_meta) -> Preprocess:
    meta = model_or_meta if isinstance(model_or_meta, dict) else model_or_meta.zoo_meta
    return Preprocess(meta)
