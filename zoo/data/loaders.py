"""Loaders behind one interface: `loader(dataset, split, batch_size, ...)` yields (images, labels).

Backends:
  native  C++ gather/augment on a thread pool (GIL released), prefetching into pinned memory.
  gpu     the whole uint8 split resident on the device; a whole epoch augmented in a few batched kernels.
  torch   torchvision transforms per sample in a DataLoader: the reference, and the `transform=` hook.
  ffcv    FFCV's Loader over a .beton written from the cache (optional extra).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..errors import ZooError, suggest
from . import gpu_kernels, native
from .cache import CachedSplit, open_split
from .native import Augment

BACKENDS = ("native", "gpu", "torch", "ffcv")


class Loader:
    """Batches of (images, labels) from a cached split, on any backend, with one seeded order and augmentation.

    Arguments:
      data           a `CachedSplit` (`open_split(dataset, split)`).
      batch_size     images per batch (>= 1); the last batch is smaller unless `drop_last`.
      augment        None, an `Augment`, or its string form ("crop_flip", "crop_flip_cutout", "mnist", ...):
                     random crop with padding, horizontal flip, cutout, brightness/contrast jitter (gpu/torch only).
      shuffle        a new seeded permutation every epoch (default: True for the train split, else False).
      drop_last      drop the last incomplete batch (training: fixed shapes for cuDNN autotuning and CUDA graphs).
      seed           seeds the order and the augmentation: epoch e is a function of (seed, e), so --resume is exact.
      backend        "native" (C++; CPU default), "gpu" (split resident on the device; CUDA default), "torch"
                     (torchvision per sample: the reference), "ffcv" (optional extra). Without the compiled
                     extension "native" falls back to "torch".
      device         where batches are delivered ("cpu", "cuda", "cuda:1"); CPU batches go there pinned.
      channels_last  NHWC memory layout (same shape, other strides): faster convolutions on recent GPUs and CPUs.
      uint8          deliver raw uint8 pixels (unnormalised) instead of normalised floats.
      dtype          float dtype of normalised batches (torch.bfloat16 halves host->device traffic).
      num_threads    native backend: batches built at once (default: the cores, capped).
      prefetch       batches prepared ahead of the consumer (>= 1).
      transform      a per-sample callable, "torch" backend only (it is your code: see SECURITY.md).
      indices        iterate over this subset of the split (e.g. a train/validation split), in the given order
                     unless shuffled.
      shard          (rank, world): this process's 1/world of every epoch's order (DDP); all ranks get equal counts.
    Call `set_epoch(e)` before iterating to pick the epoch (iterating also advances it by one).
    """

    def __init__(self, data: CachedSplit, batch_size: int, *, augment=None, shuffle: bool | None = None,
                 drop_last: bool = False, seed: int = 0, backend: str | None = None, device=None,
                 channels_last: bool = False, uint8: bool = False, dtype: torch.dtype = torch.float32,
                 num_threads: int | None = None, prefetch: int = 2, transform: Callable | None = None,
                 indices: np.ndarray | None = None, shard: tuple[int, int] = (0, 1)):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ZooError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if (not isinstance(shard, tuple) or len(shard) != 2 or not all(isinstance(v, int) for v in shard)
                or not 0 <= shard[0] < shard[1]):
            raise ZooError(f"shard must be (rank, world) with 0 <= rank < world, got {shard!r}")
        self.data, self.batch_size, self.drop_last, self.seed = data, batch_size, drop_last, seed
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**63:
            raise ZooError(f"seed must be an integer from 0 to 2**63-1, got {seed!r}")  # numpy's seeds are >= 0
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ZooError(f"dtype must be a floating torch.dtype (uint8=True gives raw bytes), got {dtype!r}")
        self.augment = Augment.parse(augment)
        self.shuffle = data.split == "train" if shuffle is None else shuffle
        try:
            self.device = torch.device(device) if device is not None else torch.device("cpu")
        except (RuntimeError, TypeError) as e:
            raise ZooError(f"device {device!r} is not a torch device ({e})") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ZooError(f"device {device!r}: CUDA is not available on this machine")
        if self.device.type not in ("cpu", "cuda"):
            raise ZooError(f"device must be a CPU or CUDA device, got {device!r}")
        backend = backend or ("gpu" if self.device.type == "cuda" else "native")
        if backend not in BACKENDS:
            raise ZooError(f"unknown loader backend {backend!r}; {suggest(backend, BACKENDS)}")
        if backend == "native" and not native.available():
            backend = "torch"
        if backend == "native" and self.augment.jitter:
            raise ZooError("brightness/contrast jitter runs batched on the device: use backend='gpu' or 'torch'")
        if transform is not None and backend != "torch":
            raise ZooError("transform= hooks run per sample on the 'torch' backend; pass backend='torch'")
        self.backend, self.channels_last, self.uint8, self.dtype = backend, channels_last, uint8, dtype
        self.num_threads = native.default_threads() if num_threads is None else \
            native.check_threads(num_threads, "num_threads")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise ZooError(f"prefetch must be an integer >= 1, got {prefetch!r}")
        self.prefetch, self.transform = prefetch, transform
        self.indices = np.arange(len(data)) if indices is None else _check_indices(indices, len(data))
        self.rank, self.world = shard
        self.epoch = 0
        mean, std = data.norm
        self.mean, self.std = mean, std
        self.lut = native.make_lut(mean, std)
        self._device_images = None

    # ------------------------------------------------------------------ shared policy
    @property
    def classes(self) -> list[str]:
        return self.data.classes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self, epoch: int) -> np.ndarray:
        """This rank's sample indices for `epoch`: one seeded permutation, sharded rank::world."""
        order = self.indices
        if self.shuffle:
            order = order[np.random.default_rng([self.seed, epoch]).permutation(len(order))]
        if self.world > 1:
            order = order[: len(order) // self.world * self.world][self.rank :: self.world]
        return order

    def epoch_params(self, epoch: int, n: int) -> dict:
        _, h, w, _ = self.data.images.shape
        return self.augment.sample(n, h, w, np.random.default_rng([self.seed, epoch, 1]))

    def __len__(self) -> int:
        n = len(self.indices) // self.world if self.world > 1 else len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _batches(self, n: int):
        stop = n - n % self.batch_size if self.drop_last else n
        return [(s, min(s + self.batch_size, stop)) for s in range(0, stop, self.batch_size)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        if self.backend != "torch":  # the DataLoader path advances its own epoch seed
            self.epoch += 1
        return getattr(self, f"_iter_{self.backend}")(epoch)

    # ------------------------------------------------------------------ native
    def _iter_native(self, epoch: int):
        order = self.epoch_order(epoch)
        params = self.epoch_params(epoch, len(order))
        labels = torch.from_numpy(self.data.labels[order])
        images = self.data.images
        _, h, w, c = images.shape
        pin = self.device.type == "cuda"
        aug = self.augment
        pad = aug.crop_pad

        def produce(lo, hi):
            shape = (hi - lo, h, w, c) if self.channels_last else (hi - lo, c, h, w)
            out = torch.empty(shape, dtype=torch.uint8 if self.uint8 else torch.float32, pin_memory=pin)
            p = _slice(params, lo, hi)
            x = native.gather_native(images, order[lo:hi], p, pad, aug.cutout, None if self.uint8 else self.lut,
                                     self.channels_last, out, 1)
            return x, labels[lo:hi]

        # One C++ thread per batch, `num_threads` batches in flight.
        for x, y in _prefetched(produce, self._batches(len(order)), self.prefetch, self.num_threads):
            if self.device.type != "cpu":
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.dtype != torch.float32 and not self.uint8:
                x = x.to(self.dtype)
            yield x, y

    # ------------------------------------------------------------------ gpu
    def _iter_gpu(self, epoch: int, chunk: int = 65536):
        if self._device_images is None:
            self._device_images = torch.from_numpy(np.array(self.data.images)).to(self.device)  # writable copy
            self._device_labels = torch.from_numpy(self.data.labels).to(self.device)
            self._device_lut = torch.from_numpy(self.lut).to(self.device)
            self._device_mean = torch.tensor(self.mean, device=self.device).view(1, -1, 1, 1)
            self._device_std = torch.tensor(self.std, device=self.device).view(1, -1, 1, 1)
        order = self.epoch_order(epoch)
        params = self.epoch_params(epoch, len(order))
        index = torch.from_numpy(order).to(self.device)
        aug = self.augment
        batches = self._batches(len(order))
        # Augment the epoch in large chunks (a few kernels each) and hand out slices of them.
        for c0 in range(0, len(batches), max(1, chunk // self.batch_size)):
            group = batches[c0 : c0 + max(1, chunk // self.batch_size)]
            lo, hi = group[0][0], group[-1][1]
            p = _slice(params, lo, hi)
            lut = None if (self.uint8 or aug.jitter) else self._device_lut
            if gpu_kernels.available(self.device) and not aug.jitter:  # one kernel, output in the final dtype
                x = gpu_kernels.augment(self._device_images, index[lo:hi], p, aug.crop_pad, aug.cutout, lut,
                                        self.channels_last, self.dtype)
            else:
                x = native.gather_torch(self._device_images, index[lo:hi], p, aug.crop_pad, aug.cutout, lut,
                                        self.channels_last)
            if aug.jitter and not self.uint8:
                x = native.color_jitter(x.float() / 255, p)
                x = (x - self._device_mean) / self._device_std
            if not self.uint8 and x.dtype != self.dtype:
                x = x.to(self.dtype)
            y = self._device_labels[index[lo:hi]]
            for s, e in group:
                yield x[s - lo : e - lo], y[s - lo : e - lo]

    # ------------------------------------------------------------------ torch (reference)
    def _iter_torch(self, epoch: int):
        from .torch_backend import torch_loader  # torchvision: heavy, and only this backend needs it

        return iter(torch_loader(self, epoch))

    # ------------------------------------------------------------------ ffcv
    def _iter_ffcv(self, epoch: int):
        from .ffcv_backend import ffcv_iter  # FFCV: an optional extra

        return ffcv_iter(self, epoch)


def _check_indices(indices, n: int) -> np.ndarray:
    """indices as a 1-D int64 array of sample numbers in [0, n): floats were truncated (0.7 read sample 0), strings
    and out-of-range values failed mid-epoch."""
    a = np.asarray(indices)
    if a.size == 0 and a.ndim == 1:
        a = a.astype(np.int64)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ZooError(f"indices must be a 1-D array of integer sample numbers, got {a.dtype} of shape {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= n):
        raise ZooError(f"indices must lie in 0..{n - 1} (the split has {n} samples), got {a.min()}..{a.max()}")
    return a.astype(np.int64)


def _slice(params: dict, lo: int, hi: int) -> dict:
    """The per-sample augmentation parameters of samples lo..hi of the epoch."""
    return {k: (v[lo:hi] if v is not None else None) for k, v in params.items()}


def _prefetched(produce, ranges, depth: int, workers: int = 1):
    """Run produce(lo, hi) for each range on `workers` background threads, in order, up to
    `depth + workers` batches ahead. With several workers, one batch's Python bookkeeping overlaps
    another's C++ work (which releases the GIL), so the cores never wait on the interpreter."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zoo-loader")
    pending: deque = deque()
    it = iter(ranges)
    try:
        for lo, hi in it:
            pending.append(pool.submit(produce, lo, hi))
            if len(pending) >= depth + workers:
                break
        while pending:
            item = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(produce, *nxt))
            yield item
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def sample_indices(n: int, k: int, seed: int = 0) -> np.ndarray:
    """A seeded random sample of k of n indices, sorted. Ingested splits are ordered by class, so the
    first k samples would show one or two classes only."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])


def loader(dataset: str, split: str = "train", batch_size: int = 512, *, labels: str = "fine", **kw) -> Loader:
    """A `Loader` over an ingested split: `loader("cifar10", "train", 256, augment="crop_flip", device="cuda")`.

    `labels` picks the label set ("fine", or "coarse" for CIFAR-100); every other keyword is a `Loader` option
    (augment, shuffle, drop_last, seed, backend, device, channels_last, uint8, dtype, num_threads, prefetch,
    transform, indices, shard), documented there.
    """
    return Loader(open_split(dataset, split, labels=labels), batch_size, **kw)
