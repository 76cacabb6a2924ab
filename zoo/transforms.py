"""Preprocessing that matches a model's training data, built from its metadata."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ZooError
from .pretrained import resolve_tag
from .weights import read_embedded_meta, read_manifest

LUMA = torch.tensor([0.299, 0.587, 0.114])  # PIL's RGB -> L weights
# A side this many times larger or smaller than the model's input is "far off": a photo of a scene shrunk to 32x32,
# or a thumbnail blown up, is not what the model saw in training, and its prediction says little.
FAR_OFF = 8


class Preprocess:
    """Images -> normalised float NCHW batch for one model.

    Takes a PIL image, an HWC (or NHWC) uint8 array or tensor, the path of an image file, or a list of these (one
    batch). Resizes to the model's input size and converts to its channel count (RGB <-> gray, alpha dropped) as
    ingest does; a colour image for a grayscale model, a grayscale one for a colour model, or a size far from the
    model's warns once per Preprocess, since the model never saw such inputs.
    """

    def __init__(self, meta: dict[str, Any], *, name: str = "the model"):
        try:
            self.in_chans, self.height, self.width = (int(v) for v in meta["input_size"])
            self.mean = torch.tensor(meta["mean"], dtype=torch.float32).view(1, -1, 1, 1)
            self.std = torch.tensor(meta["std"], dtype=torch.float32).view(1, -1, 1, 1)
        except (KeyError, TypeError, ValueError) as e:
            raise ZooError(f"{name}: its metadata has no usable input_size/mean/std ({e!r})") from None
        self.name = name
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"Preprocess({self.name}: {self.in_chans}x{self.height}x{self.width})"

    def __call__(self, images) -> torch.Tensor:
        if isinstance(images, (list, tuple)):
            if not images:
                raise ZooError("preprocess: the list of images is empty")
            return torch.cat([self._one(im, f"images[{i}]") for i, im in enumerate(images)])
        return self._one(images, "image")

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"{self.name}: {message}", UserWarning, stacklevel=4)

    def _one(self, image, what: str) -> torch.Tensor:
        if isinstance(image, (str, os.PathLike)):
            image = _open_image(Path(image))
            what = str(image.filename)
        if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image
            rgb = image.convert("RGBA" if "A" in image.getbands() else "RGB") if image.mode not in ("L", "1") \
                else image.convert("L")
            image = np.array(rgb)  # a writable copy
        if not isinstance(image, (np.ndarray, torch.Tensor)):
            raise ZooError(f"preprocess: {what} is a {type(image).__name__}; expected a PIL image, an HWC uint8 "
                           "array or tensor, an image file path, or a list of these")
        x = torch.as_tensor(image)
        if x.dtype != torch.uint8:
            raise ZooError(f"preprocess: {what} has {x.dtype} pixels; expected uint8 (0..255)")
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or 0 in x.shape:
            raise ZooError(f"preprocess: {what} has shape {list(image.shape)}; expected H x W, H x W x C or "
                           "N x H x W x C with C 1, 3 or 4 (a C x H x W tensor: pass .permute(1, 2, 0))")
        x = x.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[1] == 4:
            x = x[:, :3]
        h, w = x.shape[-2:]
        if x.shape[1] != self.in_chans:  # the conversions ingest (PIL) applies: ITU-R 601 luma, gray replicated
            if self.in_chans == 1 and not bool((x == x[:, :1]).all()):
                self._warn("colour", f"a colour image is converted to grayscale for a model trained on "
                                     f"{self.height}x{self.width} grayscale images; its prediction may mean little")
            elif self.in_chans == 3:
                self._warn("gray", "a grayscale image is replicated to RGB for a model trained on colour images; "
                                   "its prediction may mean little")
            x = (x * LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True) if self.in_chans == 1 else x.expand(-1, 3, -1, -1)
        if max(h / self.height, self.height / h, w / self.width, self.width / w) > FAR_OFF:
            self._warn("size", f"a {h}x{w} image is resized to {self.height}x{self.width}, the size the model was "
                               "trained on; crop it to the object first for a meaningful prediction")
        if (h, w) != (self.height, self.width):
            x = F.interpolate(x, size=(self.height, self.width), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im
    except FileNotFoundError:
        raise ZooError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ZooError(f"{path}: not a readable image ({e})") from None


def preprocess_for(model) -> Preprocess:
    """The preprocessing `model` was trained with, as a callable: `preprocess_for(model)(images)`.

    `model` is a model from `zoo.load` / `zoo.train`, a registry tag (`"lenet5_bn.mnist"`), a `.safetensors` file
    written by zoo, an exported model from `zoo.load_exported`, or a metadata dict (input_size, mean, std).
    """
    if isinstance(model, Mapping):  # a metadata dict, or a WeightsMeta
        return Preprocess(model, name="metadata")
    if isinstance(model, (str, os.PathLike)):
        if Path(model).suffix == ".safetensors":
            if not Path(model).is_file():
                raise ZooError(f"{model}: no such weights file")
            return Preprocess(read_embedded_meta(Path(model)), name=str(model))
        if not isinstance(model, str) or os.sep in model or Path(model).is_file():  # a file, not a tag
            raise ZooError(f"preprocess_for({str(model)!r}): takes a model, a tag or a .safetensors file; to "
                           f"preprocess an image file, pass it to the result: preprocess_for(model)({str(model)!r})")
        tag = resolve_tag(str(model))
        return Preprocess(read_manifest()[tag], name=tag)
    meta = getattr(model, "zoo_meta", None) or getattr(model, "meta", None)  # a zoo model / an exported model
    if not isinstance(meta, Mapping):
        raise ZooError(f"preprocess_for: a {type(model).__name__} carries no zoo metadata; pass a model from "
                       "zoo.load or zoo.train, a tag, a .safetensors file or a dict with input_size, mean and std")
    return Preprocess(meta, name=meta.get("tag") or type(model).__name__)
