"""The one Python wrapper around the C++ extension `zoo._native`, with pure-Python/torch fallbacks.

Policy (which samples, which crop, whether to flip, how to report errors) is decided here or by the
caller; the extension only computes. `gather_torch` is the reference implementation: the tests check
that the extension produces the same pixels, and the `gpu` loader runs it on the device.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

try:
    from .. import _native
except ImportError:  # built without the extension (e.g. a source checkout without compiling)
    _native = None

# Mirrors the Status enum in csrc/decode.hpp.
OK, UNKNOWN_FORMAT, CORRUPT, SIZE_MISMATCH, UNSUPPORTED_COLOR, NO_CODEC, IO_ERROR = range(7)
STATUS_TEXT = {
    UNKNOWN_FORMAT: "not a JPEG or PNG file",
    CORRUPT: "corrupt or truncated image data",
    SIZE_MISMATCH: "image size differs from the dataset's",
    UNSUPPORTED_COLOR: "colour format needs conversion",
    NO_CODEC: "codec not compiled in",
    IO_ERROR: "file could not be read",
}


def available() -> bool:
    return _native is not None


def features() -> dict:
    if _native is None:
        return {"native": False, "jpeg": False, "png": False}
    return {"native": True, **_native.features()}


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def decode_pil(data: bytes, h: int, w: int, c: int) -> tuple[int, np.ndarray | None]:
    """PIL decode with the same conventions as the C++ path (alpha dropped, 16-bit reduced, CMYK converted)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.size != (w, h):
                return SIZE_MISMATCH, None
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.uint32) >> 8  # 16-bit grayscale: keep the high byte
                im = Image.fromarray(arr.astype(np.uint8), "L")
            im = im.convert("L" if c == 1 else "RGB")
            out = np.asarray(im, dtype=np.uint8).reshape(h, w, c)
            return OK, out
    except UnidentifiedImageError:
        return UNKNOWN_FORMAT, None
    except (OSError, SyntaxError, ValueError):
        return CORRUPT, None


def decode_files(paths: list[str], out: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Decode image files into out (N x H x W x C uint8); returns per-file status codes.

    Native decoding first; files it cannot handle (no codec compiled in, CMYK, RGB->gray, ...) go
    through PIL so that every image the dataset accepts decodes the same way on every install.
    """
    n, h, w, c = out.shape
    if _native is not None:
        status = _native.decode_files(list(paths), out, threads or default_threads())
    else:
        status = np.full(n, NO_CODEC, np.int32)
    for i in np.flatnonzero((status == NO_CODEC) | (status == UNSUPPORTED_COLOR)):
        try:
            data = open(paths[i], "rb").read()
        except OSError:
            status[i] = IO_ERROR
            continue
        status[i], img = decode_pil(data, h, w, c)
        if img is not None:
            out[i] = img
    return status


def channel_histogram(images: np.ndarray) -> np.ndarray:
    """C x 256 pixel-value counts per channel of a uint8 (..., C) array (C++ threads, numpy fallback)."""
    if _native is not None:
        return _native.channel_histogram(np.ascontiguousarray(images), default_threads())
    c = images.shape[-1]
    flat = images.reshape(-1, c)
    offsets = (np.arange(c, dtype=np.uint16) * 256)[None, :]
    hist = np.zeros(256 * c, np.int64)
    for s in range(0, len(flat), 1 << 22):
        hist += np.bincount((flat[s : s + (1 << 22)] + offsets).ravel(), minlength=256 * c)
    return hist.reshape(c, 256)


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation. Random choices are drawn in Python (numpy), applied by C++ or torch."""

    crop_pad: int = 0  # random crop of the original size after zero padding by this much (0: off)
    flip: bool = False  # random horizontal flip
    cutout: int = 0  # side of a zeroed square at a random centre (0: off)
    brightness: float = 0.0  # gpu/torch backends only: factor drawn from [1-b, 1+b]
    contrast: float = 0.0  # gpu/torch backends only

    PRESETS = {
        "none": {},
        "flip": {"flip": True},
        "crop": {"crop_pad": 4},
        "crop_flip": {"crop_pad": 4, "flip": True},
        "crop_flip_cutout": {"crop_pad": 4, "flip": True, "cutout": 8},
        "mnist": {"crop_pad": 2},
    }

    @classmethod
    def parse(cls, spec) -> Augment:
        from ..errors import ZooError, suggest

        if spec is None or spec is False:
            return cls()
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, dict):
            return cls(**spec)
        if spec not in cls.PRESETS:
            raise ZooError(f"unknown augment {spec!r}; {suggest(str(spec), cls.PRESETS, 'presets')}")
        return cls(**cls.PRESETS[spec])

    @property
    def jitter(self) -> bool:
        return bool(self.brightness or self.contrast)

    def sample(self, n: int, h: int, w: int, rng: np.random.Generator) -> dict[str, np.ndarray | None]:
        """Per-sample parameters for n images of size h x w (output size = input size)."""
        p: dict[str, np.ndarray | None] = {"crop_y": None, "crop_x": None, "flip": None, "cut_y": None, "cut_x": None}
        if self.crop_pad:
            p["crop_y"] = rng.integers(0, 2 * self.crop_pad + 1, n, dtype=np.int32)
            p["crop_x"] = rng.integers(0, 2 * self.crop_pad + 1, n, dtype=np.int32)
        if self.flip:
            p["flip"] = rng.integers(0, 2, n, dtype=np.uint8)
        if self.cutout:
            p["cut_y"] = (rng.integers(0, h, n) - self.cutout // 2).astype(np.int32)
            p["cut_x"] = (rng.integers(0, w, n) - self.cutout // 2).astype(np.int32)
        if self.brightness:
            p["brightness"] = rng.uniform(1 - self.brightness, 1 + self.brightness, n).astype(np.float32)
        if self.contrast:
            p["contrast"] = rng.uniform(1 - self.contrast, 1 + self.contrast, n).astype(np.float32)
        return p


def make_lut(mean, std) -> np.ndarray:
    """C x 256 float32 table: the normalised value of pixel v in channel c."""
    v = np.arange(256, dtype=np.float64) / 255.0
    return ((v[None, :] - np.asarray(mean, np.float64)[:, None]) / np.asarray(std, np.float64)[:, None]).astype(
        np.float32
    )


def gather_native(src: np.ndarray, index: np.ndarray, params: dict, pad: int, cutout: int,
                  lut: np.ndarray | None, channels_last: bool, out: torch.Tensor, threads: int) -> torch.Tensor:
    """C++ gather into `out` (a preallocated, possibly pinned, B x H x W x C or B x C x H x W tensor)."""
    _, h, w, _ = src.shape
    _native.gather(src, np.ascontiguousarray(index, np.int64), params["crop_y"], params["crop_x"], params["flip"],
                   pad, h, w, params["cut_y"], params["cut_x"], cutout, lut, channels_last, out.numpy(), threads)
    return out.permute(0, 3, 1, 2) if channels_last else out


def gather_torch(src: torch.Tensor, index: torch.Tensor, params: dict, pad: int, cutout: int,
                 lut: torch.Tensor | None, channels_last: bool) -> torch.Tensor:
    """Batched reference of the C++ gather, on any device: no per-sample Python.

    src is N x H x W x C uint8; returns B x C x H x W (channels_last memory format when asked),
    float32 through lut or uint8 when lut is None.
    """
    dev = src.device
    x = src[index]  # B x H x W x C
    b, h, w, c = x.shape

    def arg(name):
        v = params.get(name)
        return None if v is None else torch.as_tensor(v, device=dev)

    crop_y, crop_x, flip = arg("crop_y"), arg("crop_x"), arg("flip")
    if crop_y is not None or flip is not None:
        if pad:
            x = F.pad(x, (0, 0, pad, pad, pad, pad))
        origin_y = crop_y.long()[:, None] if crop_y is not None else torch.full((b, 1), pad, device=dev)
        origin_x = crop_x.long()[:, None] if crop_x is not None else torch.full((b, 1), pad, device=dev)
        rows = origin_y + torch.arange(h, device=dev)  # B x H padded-image rows
        cols = origin_x + torch.arange(w, device=dev)  # B x W padded-image columns
        if flip is not None:
            cols = torch.where(flip.bool()[:, None], cols.flip(1), cols)
        x = x[torch.arange(b, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if cutout:
        cy, cx = arg("cut_y").long(), arg("cut_x").long()
        ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
        my = (ys[None] >= cy[:, None]) & (ys[None] < cy[:, None] + cutout)
        mx = (xs[None] >= cx[:, None]) & (xs[None] < cx[:, None] + cutout)
        x = x.masked_fill((my[:, :, None] & mx[:, None, :])[..., None], 0)
    if lut is not None:
        x = lut[torch.arange(c, device=dev), x.long()]  # table lookup: same values as the C++ path
    x = x.permute(0, 3, 1, 2)
    return x if channels_last else x.contiguous()


def color_jitter(x: torch.Tensor, params: dict) -> torch.Tensor:
    """Batched brightness/contrast on float pixels in [0, 1] (B x C x H x W)."""
    if params.get("brightness") is not None:
        x = x * torch.as_tensor(params["brightness"], device=x.device).view(-1, 1, 1, 1)
    if params.get("contrast") is not None:
        f = torch.as_tensor(params["contrast"], device=x.device).view(-1, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * f + mean
    return x.clamp_(0, 1)
