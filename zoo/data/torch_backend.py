"""The reference pipeline: torchvision transforms per sample in a multi-worker DataLoader.

When the split was ingested from an image folder that still exists, images are decoded from the
original files with PIL every time (the classic ImageFolder pipeline); otherwise from the cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ZooError
from .readers import RawSplit, scan_image_folder, subset_classes


class CacheImages(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, order: np.ndarray, transform):
        self.images, self.labels, self.order, self.transform = images, labels, order, transform

    def __len__(self):
        return len(self.order)

    def __getitem__(self, i):
        from PIL import Image

        j = self.order[i]
        img = self.images[j]
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        return self.transform(pil), int(self.labels[j])


class FolderImages(Dataset):
    """The original files, opened with PIL for every sample (the classic ImageFolder pipeline)."""

    def __init__(self, paths: list[str], labels: np.ndarray, order: np.ndarray, in_chans: int, transform):
        self.paths, self.labels = paths, labels
        self.order, self.mode, self.transform = order, "L" if in_chans == 1 else "RGB", transform

    def __len__(self):
        return len(self.order)

    def __getitem__(self, i):
        from PIL import Image

        j = self.order[i]
        with Image.open(self.paths[j]) as im:
            return self.transform(im.convert(self.mode)), int(self.labels[j])


def source_files(data) -> list[str] | None:
    """The split's original image files in cache order, or None where they are gone or no longer match the cache.

    Listed the way ingest listed them (our scanner: the same extensions, order and --classes subset; torchvision's
    ImageFolder would also take .bmp/.webp files and every class, and its indices would point at other images)."""
    meta = data.meta
    root = Path(meta.get("source_root", "")) / data.split
    if meta.get("format") != "imagefolder" or not root.is_dir():
        return None
    try:
        classes, paths, labels, _ = scan_image_folder(root)
        if meta.get("options", {}).get("classes"):  # the one subset function, over file names instead of pixels
            sub = subset_classes(RawSplit(np.array(paths, dtype=object), labels, classes),
                                 meta["options"]["classes"], root)
            paths, labels = list(sub.images), sub.labels
    except ZooError:
        return None
    return paths if np.array_equal(labels, data.labels) else None


def transforms_for(ld):
    from torchvision import transforms as T

    _, h, w, c = ld.data.images.shape
    aug, steps = ld.augment, []
    if aug.crop_pad:
        steps.append(T.RandomCrop((h, w), padding=aug.crop_pad))
    if aug.flip:
        steps.append(T.RandomHorizontalFlip())
    if aug.jitter:
        steps.append(T.ColorJitter(brightness=aug.brightness, contrast=aug.contrast))
    if ld.transform is not None:
        steps.append(ld.transform)
    steps += [T.PILToTensor()] if ld.uint8 else [T.ToTensor(), T.Normalize(ld.mean, ld.std)]
    if aug.cutout:
        steps.append(T.RandomErasing(p=1.0, scale=(aug.cutout**2 / (h * w),) * 2, ratio=(1, 1), value=0))
    return T.Compose(steps)


def torch_loader(ld, epoch: int) -> DataLoader:
    order = ld.epoch_order(epoch)
    tf = transforms_for(ld)
    paths = source_files(ld.data)
    if paths is not None:
        ds = FolderImages(paths, ld.data.labels, order, ld.data.images.shape[-1], tf)
    else:
        ds = CacheImages(ld.data.images, ld.data.labels, order, tf)
    g = torch.Generator().manual_seed(ld.seed * 1000003 + epoch)
    ld.epoch = epoch + 1
    workers = min(2, ld.num_threads)
    dl = DataLoader(ds, batch_size=ld.batch_size, shuffle=False, drop_last=ld.drop_last, num_workers=workers,
                    pin_memory=ld.device.type == "cuda", generator=g, persistent_workers=False,
                    prefetch_factor=ld.prefetch if workers else None)
    for x, y in dl:
        if ld.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x.to(ld.device, non_blocking=True), y.to(ld.device, non_blocking=True)
