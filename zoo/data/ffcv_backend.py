"""The optional FFCV backend: a raw-pixel .beton written once from the cache, read by FFCV's Loader
with the same augmentations (flip, translate = crop with zero padding, cutout) and normalisation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io import atomic_write


class _Indexed:
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = np.asarray(self.images[i])
        if img.shape[-1] == 1:  # FFCV stores RGB only: grayscale travels replicated, one channel is kept on load
            img = np.repeat(img, 3, axis=-1)
        return img, int(self.labels[i])


def beton_path(data) -> Path:
    """`<split>/data.beton`, written atomically on first use (the split folder is replaced on re-ingest)."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    path = data.path / "data.beton"
    if not path.exists():

        def write(tmp: Path) -> None:
            writer = DatasetWriter(str(tmp), {"image": RGBImageField(write_mode="raw"), "label": IntField()},
                                   num_workers=max(1, len(os.sched_getaffinity(0))))
            writer.from_indexed_dataset(_Indexed(data.images, data.labels))

        atomic_write(path, write)
    return path


def _loader(ld):
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import (
        Cutout,
        NormalizeImage,
        RandomHorizontalFlip,
        RandomTranslate,
        Squeeze,
        ToTensor,
        ToTorchImage,
    )

    aug = ld.augment
    mean, std = (ld.mean * 3, ld.std * 3) if ld.data.images.shape[-1] == 1 else (ld.mean, ld.std)
    image = [SimpleRGBImageDecoder()]
    if aug.flip:
        image.append(RandomHorizontalFlip())
    if aug.crop_pad:
        image.append(RandomTranslate(padding=aug.crop_pad, fill=(0, 0, 0)))
    if aug.cutout:
        image.append(Cutout(aug.cutout, (0, 0, 0)))
    image += [NormalizeImage(np.array(mean) * 255, np.array(std) * 255, np.float32), ToTensor(),
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
        gray = ld.data.images.shape[-1] == 1
        for x, y in it:
            if gray:
                x = x[:, :1]
            if not ld.channels_last:
                x = x.contiguous()
            yield x.to(ld.device, non_blocking=True), y.long().to(ld.device, non_blocking=True)
    finally:
        _stop(it)


def _stop(it) -> None:
    """Stop an epoch's worker thread and wait for it. EpochIterator.close only sets a flag that the thread reads
    when its queue is full, and frees the epoch's memory at once: a thread still inside the compiled pipeline at
    interpreter exit aborts the process ("terminate called without an active exception", exit code 134), as an
    epoch abandoned by `islice` did in the quick loader benchmark. The thread stops at its next full-queue put
    (every 0.5 s); the queue is not drained before that, since a drained queue lets the thread refill the slot
    whose memory the caller's last batch still views. Only a thread still alive after that can be blocked in its
    untimed end-of-epoch put (no batch follows it): draining then lets it return."""
    import queue

    it.terminate_event.set()
    it.join(timeout=10)
    while it.is_alive():
        try:
            while True:
                it.output_queue.get_nowait()
        except queue.Empty:
            pass
        it.join(timeout=0.1)
    it.close()
