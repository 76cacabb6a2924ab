"""Offline readers for the official on-disk formats. Each returns uint8 NHWC images and int64 labels.

Nothing here downloads. Every malformed input raises ZooError naming the offending file.
"""

from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ZooError, suggest
from . import native

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg"}


@dataclass
class RawSplit:
    images: np.ndarray  # N x H x W x C uint8
    labels: np.ndarray  # N int64
    classes: list[str]
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. coarse_labels
    extra_meta: dict = field(default_factory=dict)  # e.g. coarse_classes, skipped-file counts
    sources: list[Path] = field(default_factory=list)  # files read (for the cache fingerprint)


def check_subset(available: list[str], classes: list[str], where: Path) -> None:
    """--classes names only existing classes, each once; one ZooError naming the unknown ones (with suggestions)."""
    unknown = [c for c in classes if c not in available]
    if unknown or len(set(classes)) != len(classes):
        what = f"unknown class(es) {unknown}" if unknown else f"repeated class names in {classes}"
        hint = suggest(unknown[0], available, "valid") if unknown else f"valid: {', '.join(available)}"
        raise ZooError(f"--classes: {what} in {where}; {hint}")


def subset_classes(raw: RawSplit, classes: list[str], where: Path) -> RawSplit:
    """Keep only `classes` (labels renumbered in the order given), e.g. a 5-class subset to fine-tune on."""
    check_subset(raw.classes, classes, where)
    keep = np.array([raw.classes.index(c) for c in classes])
    mask = np.isin(raw.labels, keep)
    remap = np.full(len(raw.classes), -1, np.int64)
    remap[keep] = np.arange(len(keep))
    return RawSplit(raw.images[mask], remap[raw.labels[mask]], list(classes),
                    {k: v[mask] for k, v in raw.extra.items()}, raw.extra_meta, raw.sources)


# ---------------------------------------------------------------- MNIST IDX

IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ZooError(f"{path}: cannot read IDX file: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise ZooError(f"{path}: bad IDX magic {data[:4].hex()} (expected 0000 08 0N: unsigned-byte data)")
    ndim = data[3]
    if ndim < 1 or len(data) < 4 + 4 * ndim:
        raise ZooError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = data[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise ZooError(f"{path}: IDX header says shape {shape} ({int(np.prod(shape))} bytes) but {len(body)} bytes follow")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _find(root: Path, names: list[str]) -> Path:
    for n in names:
        for cand in (root / n, root / (n + ".gz")):
            if cand.exists():
                return cand
    raise ZooError(f"{root}: none of {', '.join(names)} (or .gz) found")


def read_mnist(root: Path, split: str) -> RawSplit:
    prefix = "train" if split == "train" else "t10k"
    ip = _find(root, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"])
    lp = _find(root, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
    images, labels = read_idx(ip), read_idx(lp)
    if images.ndim != 3 or labels.ndim != 1:
        raise ZooError(f"{ip}: expected N x 28 x 28 images and N labels, got {images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise ZooError(f"{ip} has {len(images)} images but {lp} has {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise ZooError(f"{lp}: label {labels.max()} out of range 0..9")
    return RawSplit(images[..., None].copy(), labels.astype(np.int64), [str(i) for i in range(10)], sources=[ip, lp])


# ---------------------------------------------------------------- CIFAR pickles

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how protocol-2 pickles spell bytes
    ("__builtin__", "bytes"),  # ... and empty bytes
    ("builtins", "bytes"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Only plain containers, bytes, numbers and numpy arrays: a pickle that names anything else is refused."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a dataset pickle")


def load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as e:
        raise ZooError(f"{path}: refused or unreadable pickle: {e}") from None
    except OSError as e:
        raise ZooError(f"{path}: cannot read: {e}") from None
    if not isinstance(obj, dict):
        raise ZooError(f"{path}: expected a dict, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _need(d: dict, path: Path, *keys: str):
    missing = [k for k in keys if k not in d]
    if missing:
        raise ZooError(f"{path}: missing key(s) {', '.join(missing)} (has {', '.join(sorted(map(str, d)))})")
    return [d[k] for k in keys]


def _names(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _cifar_images(data, path: Path) -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != 3072:
        raise ZooError(f"{path}: 'data' must be N x 3072 uint8, got {arr.shape} {arr.dtype}")
    return arr.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def read_cifar10(root: Path, split: str) -> RawSplit:
    root = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    meta_path = root / "batches.meta"
    (label_names,) = _need(load_pickle(meta_path), meta_path, "label_names")
    images, labels, sources = [], [], [meta_path]
    for n in names:
        p = root / n
        if not p.exists():
            raise ZooError(f"{p}: CIFAR-10 batch file not found")
        data, lab = _need(load_pickle(p), p, "data", "labels")
        img = _cifar_images(data, p)
        if len(img) != len(lab):
            raise ZooError(f"{p}: {len(img)} images but {len(lab)} labels")
        images.append(img), labels.append(_labels(lab, len(label_names), p, "labels")), sources.append(p)
    return RawSplit(np.concatenate(images), np.concatenate(labels), _names(label_names), sources=sources)


def _labels(values, n_classes: int, path: Path, key: str) -> np.ndarray:
    """A pickle's label list as int64, each in 0..n_classes-1: an out-of-range label would index past the class
    names (or, once cached, be learned as a class that does not exist)."""
    try:
        arr = np.asarray(values, np.int64)
    except (TypeError, ValueError, OverflowError):
        raise ZooError(f"{path}: '{key}' must be a list of integers") from None
    if arr.ndim != 1:
        raise ZooError(f"{path}: '{key}' must be a flat list of integers, got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ZooError(f"{path}: '{key}' has label {int(arr.min() if arr.min() < 0 else arr.max())} outside "
                       f"0..{n_classes - 1} ({n_classes} class names)")
    return arr


def read_cifar100(root: Path, split: str) -> RawSplit:
    root = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
    meta_path, p = root / "meta", root / split
    fine_names, coarse_names = _need(load_pickle(meta_path), meta_path, "fine_label_names", "coarse_label_names")
    if not p.exists():
        raise ZooError(f"{p}: CIFAR-100 file not found")
    data, fine, coarse = _need(load_pickle(p), p, "data", "fine_labels", "coarse_labels")
    img = _cifar_images(data, p)
    if not len(img) == len(fine) == len(coarse):
        raise ZooError(f"{p}: {len(img)} images but {len(fine)} fine / {len(coarse)} coarse labels")
    return RawSplit(
        img, _labels(fine, len(fine_names), p, "fine_labels"), _names(fine_names),
        extra={"coarse_labels": _labels(coarse, len(coarse_names), p, "coarse_labels")},
        extra_meta={"coarse_classes": _names(coarse_names)}, sources=[meta_path, p],
    )


# ---------------------------------------------------------------- STL-10 binaries


def read_stl10(root: Path, split: str, *, resize: int | None = None) -> RawSplit:
    root = root / "stl10_binary" if (root / "stl10_binary").is_dir() else root
    xp, yp, cp = root / f"{split}_X.bin", root / f"{split}_y.bin", root / "class_names.txt"
    for p in (xp, yp, cp):
        if not p.exists():
            raise ZooError(f"{p}: STL-10 file not found")
    raw = np.fromfile(xp, dtype=np.uint8)
    if raw.size % (3 * 96 * 96):
        raise ZooError(f"{xp}: size {raw.size} is not a multiple of 3*96*96")
    # STL-10 stores each image column-major (C, W, H): transpose to H x W x C.
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)
    labels = np.fromfile(yp, dtype=np.uint8).astype(np.int64) - 1
    if len(images) != len(labels):
        raise ZooError(f"{xp} has {len(images)} images but {yp} has {len(labels)} labels")
    names = [line.strip() for line in cp.read_text().splitlines() if line.strip()]
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise ZooError(f"{yp}: labels must be 1..{len(names)}")
    if resize and resize != 96:
        t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        t = F.interpolate(t, size=(resize, resize), mode="bilinear", antialias=True, align_corners=False)
        images = t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return RawSplit(np.ascontiguousarray(images), labels, names, sources=[xp, yp, cp])


# ---------------------------------------------------------------- ImageFolder (CINIC-10 and any PNG/JPEG tree)


def class_folders(root: Path) -> list[str]:
    """The class names of an ImageFolder split: its sub-folders, sorted."""
    if not root.is_dir():
        raise ZooError(f"{root}: image folder not found")
    with os.scandir(root) as it:
        classes = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ZooError(f"{root}: no class folders")
    return classes


def scan_image_folder(root: Path) -> tuple[list[str], list[str], np.ndarray, int]:
    """Classes (sorted folder names), image paths, labels, and the count of skipped non-image files.

    os.scandir and plain strings: on a 60k-file tree this is several times faster than pathlib."""
    classes = class_folders(root)
    paths: list[str] = []
    labels: list[int] = []
    skipped = 0
    for i, c in enumerate(classes):
        d = os.path.join(root, c)
        with os.scandir(d) as it:
            names = sorted(e.name for e in it if e.is_file() and not e.name.startswith("."))
        imgs = [n for n in names if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
        skipped += len(names) - len(imgs)
        if not imgs:
            raise ZooError(f"{d}: class folder has no .png/.jpg/.jpeg images")
        paths += [os.path.join(d, n) for n in imgs]
        labels += [i] * len(imgs)
    return classes, paths, np.asarray(labels, np.int64), skipped


def probe_image(path: Path) -> tuple[int, int, int]:
    """(height, width, channels) of the first image, read by PIL (channels: 1 for L/I;16, else 3)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0], 1 if im.mode in ("1", "L", "I;16", "I;16B", "I;16L", "I") else 3
    except Exception as e:
        raise ZooError(f"{path}: cannot read image: {e}") from None


def read_image_folder(root: Path, *, size: tuple[int, int, int] | None = None, threads: int | None = None,
                      progress=None) -> RawSplit:
    # progress: called once with the image count, returns a callable taking the number just decoded
    """Decode a `<root>/<class>/<image>` tree. Grayscale/RGBA/16-bit/palette/CMYK images are converted
    to the dataset's channel count; non-image files are skipped and counted; anything undecodable is an error."""
    classes, paths, labels, skipped = scan_image_folder(root)
    h, w, c = size or probe_image(Path(paths[0]))
    images = np.empty((len(paths), h, w, c), np.uint8)
    chunk = 8192
    update = progress(len(paths)) if progress else None
    for start in range(0, len(paths), chunk):
        end = min(start + chunk, len(paths))
        status = native.decode_files(paths[start:end], images[start:end], threads)
        bad = np.flatnonzero(status != native.OK)
        if bad.size:
            lines = [f"  {paths[start + i]}: {native.STATUS_TEXT.get(int(status[i]), status[i])}" for i in bad[:10]]
            more = f"\n  ... and {bad.size - 10} more" if bad.size > 10 else ""
            raise ZooError(f"{bad.size} image(s) in {root} could not be decoded ({h}x{w}x{c} expected):\n"
                           + "\n".join(lines) + more)
        if update:
            update(end - start)
    return RawSplit(images, labels, classes, extra_meta={"skipped_non_images": skipped}, sources=[root])
