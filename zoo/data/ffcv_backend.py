"""The optional FFCV backend: a raw-pixel .beton written once from the cache, read by FFCV's Loader
with the same augmentations (flip, translate = crop with zero padding, cutout) and normalisation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ZooError


class _Indexed:
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return np.asarray(self.images[i]), int(self.labels[i])


def beton_path(data) -> Path:
    """`<split>/data.beton`, written atomically on first use (the split folder is replaced on re-ingest)."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    path = data.path / "data.beton"
    if not path.exists():
        tmp = path.with_name(f".data.beton.{os.getpid()}.tmp")
        writer = DatasetWriter(str(tmp), {"image": RGBImageField(write_mode="raw"), "label": IntField()},
                               num_workers=max(1, len(os.sched_getaffinity(0))))
        writer.from_indexed_dataset(_Indexed(data.images, data.labels))
        os.replace(tmp, path)
    return path


def _loader(ld):
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import Cutout, NormalizeImage, RandomHorizontalFlip, RandomTranslate, Squeeze, ToTensor, \
        ToTorchImage

    if ld.data.images.shape[-1] != 3:
        raise ZooError("the ffcv backend reads RGB datasets only; use backend='native' for grayscale data")
    aug = ld.augment
    image = [SimpleRGBImageDecoder()]
    if aug.flip:
        image.append(RandomHorizontalFlip())
    if aug.crop_pad:
        image.append(RandomTranslate(padding=aug.crop_pad, fill=(0, 0, 0)))
    if aug.cutout:
        image.append(Cutout(aug.cutout, (0, 0, 0)))
    image += [NormalizeImage(np.array(ld.mean) * 255, np.array(ld.std) * 255, np.float32), ToTensor(),
              ToTorchImage(channels_last=ld.channels_last)]
    return Loader(str(beton_path(ld.data)), batch_size=ld.batch_size, num_workers=ld.num_threads,
                  order=OrderOption.RANDOM if ld.shuffle else OrderOption.SEQUENTIAL, drop_last=ld.drop_last,
                  indices=ld.indices, seed=ld.seed,
                  pipelines={"image": image, "label": [IntDecoder(), ToTensor(), Squeeze()]})


def ffcv_iter(ld, epoch: int):
    # FFCV compiles its pipeline per Loader (15-20 s per process): build it once per zoo Loader.
    if getattr(ld, "_ffcv", None) is None:
        ld._ffcv = _loader(ld)
    it = iter(ld._ffcv)
    try:
        for x, y in it:
            if not ld.channels_last:
                x = x.contiguous()
            yield x.to(ld.device, non_blocking=True), y.long().to(ld.device, non_blocking=True)
    finally:  # an abandoned epoch must stop FFCV's worker thread, or the process aborts at exit
        it.close()
