"""One-pass batched augmentation for the `gpu` loader, as a Triton kernel.

The torch reference (`native.gather_torch`) takes ~6 passes over the batch (gather, pad, 3-index
gather, int64 LUT indices, lookup, layout copy). This kernel reads each source pixel once and writes
each output element once: crop (zero padding), flip, cutout and the same lookup-table normalisation,
so its values equal the reference exactly. One program per sample; a whole epoch is one launch.
Used when Triton and a CUDA device are present; tests run it on the CPU via TRITON_INTERPRET=1.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs without triton
    triton = None

if triton is not None:

    @triton.jit
    def _augment_kernel(src, index, crop_y, crop_x, flip, cut_y, cut_x, lut, out,
                        H: tl.constexpr, W: tl.constexpr, C: tl.constexpr, PAD: tl.constexpr, CUT: tl.constexpr,
                        HB: tl.constexpr, WB: tl.constexpr, HAS_CROP: tl.constexpr, HAS_FLIP: tl.constexpr,
                        HAS_LUT: tl.constexpr, CHANNELS_LAST: tl.constexpr):
        b = tl.program_id(0)
        sample = tl.load(index + b).to(tl.int64)
        ys = tl.arange(0, HB)[:, None]
        xs = tl.arange(0, WB)[None, :]
        oy = 0
        ox = 0
        if HAS_CROP:
            oy = tl.load(crop_y + b) - PAD
            ox = tl.load(crop_x + b) - PAD
        sx = xs
        if HAS_FLIP:
            sx = tl.where(tl.load(flip + b) != 0, W - 1 - xs, xs)
        sy = ys + oy
        sx = sx + ox
        inside = (ys < H) & (xs < W)
        valid = inside & (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W)
        if CUT > 0:
            cy = tl.load(cut_y + b)
            cx = tl.load(cut_x + b)
            valid = valid & ~((ys >= cy) & (ys < cy + CUT) & (xs >= cx) & (xs < cx + CUT))
        base = src + sample * (H * W * C)
        pix = (sy * W + sx) * C
        for c in tl.static_range(C):
            v = tl.load(base + pix + c, mask=valid, other=0)
            if HAS_LUT:
                val = tl.load(lut + c * 256 + v.to(tl.int32), mask=inside, other=0.0)
            else:
                val = v
            if CHANNELS_LAST:
                o = b.to(tl.int64) * (H * W * C) + (ys * W + xs) * C + c
            else:
                o = b.to(tl.int64) * (H * W * C) + c * (H * W) + ys * W + xs
            tl.store(out + o, val.to(out.dtype.element_ty), mask=inside)


def available(device: torch.device) -> bool:
    return triton is not None and (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")


def augment(src: torch.Tensor, index: torch.Tensor, params: dict, pad: int, cutout: int,
            lut: torch.Tensor | None, channels_last: bool, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Same contract as native.gather_torch (B x C x H x W result), in one kernel launch."""
    _, h, w, c = src.shape
    b = index.shape[0]
    dev = src.device

    def arg(name, dt):
        v = params.get(name)
        return torch.as_tensor(v, device=dev).to(dt).contiguous() if v is not None else None

    crop_y, crop_x, flip = arg("crop_y", torch.int32), arg("crop_x", torch.int32), arg("flip", torch.uint8)
    cut_y, cut_x = arg("cut_y", torch.int32), arg("cut_x", torch.int32)
    out_dtype = torch.uint8 if lut is None else dtype
    out = torch.empty((b, h, w, c) if channels_last else (b, c, h, w), dtype=out_dtype, device=dev)
    dummy = index  # placeholder pointer for absent optional arrays (never read: the constexpr flags are off)
    _augment_kernel[(b,)](
        src, index, crop_y if crop_y is not None else dummy, crop_x if crop_x is not None else dummy,
        flip if flip is not None else dummy, cut_y if cut_y is not None else dummy,
        cut_x if cut_x is not None else dummy, lut if lut is not None else dummy, out,
        H=h, W=w, C=c, PAD=pad, CUT=cutout, HB=triton.next_power_of_2(h), WB=triton.next_power_of_2(w),
        HAS_CROP=crop_y is not None, HAS_FLIP=flip is not None, HAS_LUT=lut is not None,
        CHANNELS_LAST=channels_last,
    )
    return out.permute(0, 3, 1, 2) if channels_last else out
