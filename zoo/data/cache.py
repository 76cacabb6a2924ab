"""Decode-once cache: `<data_home>/<dataset>/<split>/{images.npy, labels.npy, meta.json}`.

images.npy is uint8 N x H x W x C, memory-mapped on open. A split is built in a temporary folder
and renamed into place, under a per-dataset file lock, so a crash or a concurrent ingest never leaves
a half-written split; a changed source (file list, sizes, mtimes) rebuilds it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ZooError, suggest
from . import readers
from .specs import DATASETS

CACHE_VERSION = 1


def data_home() -> Path:
    env = os.environ.get("ZOO_DATA")
    if env:
        return Path(env).expanduser()
    from ..io import zoo_home

    return zoo_home() / "data"


def _walk(d: str, rel: str, out: list) -> None:
    with os.scandir(d) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                _walk(e.path, f"{rel}{e.name}/", out)
            elif e.is_file():
                st = e.stat()
                out.append(f"{rel}{e.name}|{st.st_size}|{st.st_mtime_ns}\n")


def fingerprint(paths: list[Path]) -> str:
    """Cheap identity of the source: every file's relative path, size and mtime."""
    h = hashlib.sha256()
    for p in paths:
        entries: list[str] = []
        if p.is_dir():
            _walk(str(p), f"{p.name}/", entries)
        else:
            st = p.stat()
            entries.append(f"{p.name}|{st.st_size}|{st.st_mtime_ns}\n")
        h.update("".join(sorted(entries)).encode())
    return h.hexdigest()


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Exact per-channel mean/std of pixels/255, from 256-bin histograms (no float copy of the data)."""
    from .native import channel_histogram

    v = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for h in channel_histogram(images).astype(np.float64):
        m = (h * v).sum() / h.sum()
        means.append(round(float(m), 6))
        stds.append(round(float(np.sqrt((h * (v - m) ** 2).sum() / h.sum())), 6))
    return means, stds


# The on-disk formats, recognised by their files (so any of them can be ingested under a new name), and which of
# them each known dataset may come in.
FORMAT_NAMES = {"idx": "MNIST IDX files", "cifar10": "CIFAR-10 python pickles", "cifar100": "CIFAR-100 python pickles",
                "stl10": "STL-10 binaries", "imagefolder": "train/ test/ image folders"}
DATASET_FORMATS = {"mnist": ("idx", "imagefolder"), "cifar10": ("cifar10", "imagefolder"),
                   "cifar100": ("cifar100", "imagefolder"), "stl10": ("stl10", "imagefolder"),
                   "cinic10": ("imagefolder",)}


def detect_format(dataset: str, root: Path) -> str:
    if not root.exists():
        raise ZooError(f"--root {root} does not exist")
    if any(root.glob("train-images*idx3-ubyte*")) or any(root.glob("t10k-images*idx3-ubyte*")):
        fmt = "idx"
    elif (root / "batches.meta").exists() or (root / "cifar-10-batches-py").is_dir():
        fmt = "cifar10"
    elif (root / "meta").is_file() or (root / "cifar-100-python").is_dir():
        fmt = "cifar100"
    elif (root / "stl10_binary").is_dir() or any(root.glob("*_X.bin")):
        fmt = "stl10"
    elif (root / "train").is_dir() or (root / "test").is_dir():
        fmt = "imagefolder"
    else:
        raise ZooError(f"--root {root}: no {dataset} data recognised (expected the official files or train/ and "
                       "test/ image folders)")
    if fmt not in DATASET_FORMATS.get(dataset, FORMAT_NAMES):
        raise ZooError(f"--root {root} holds {FORMAT_NAMES[fmt]}, not {dataset} data; ingest it under its own "
                       f"dataset name")
    return fmt


def read_split(dataset: str, root: Path, split: str, fmt: str, *, progress=None, **opts) -> readers.RawSplit:
    spec = DATASETS.get(dataset)
    if opts.get("resize") and fmt != "stl10":
        raise ZooError(f"--resize applies to STL-10 only; {dataset} images are stored at their own size")
    if fmt == "imagefolder" and spec and spec.classes is not None:  # wrong tree: fail before decoding it
        _check_classes(dataset, root, readers.class_folders(root / split), spec)
    if fmt == "idx":
        raw = readers.read_mnist(root, split)
    elif fmt in ("cifar10", "cifar100"):
        raw = (readers.read_cifar10 if fmt == "cifar10" else readers.read_cifar100)(root, split)
    elif fmt == "stl10":
        raw = readers.read_stl10(root, split, resize=opts.get("resize"))
    else:
        size = (spec.img_size, spec.img_size, spec.in_chans) if spec else None
        raw = readers.read_image_folder(root / split, size=size, threads=opts.get("threads"), progress=progress)
    if spec and spec.classes is not None and fmt != "imagefolder":  # ImageFolder was checked before decoding
        _check_classes(dataset, root, raw.classes, spec)
    return readers.subset_classes(raw, opts["classes"], root / split) if opts.get("classes") else raw


def _check_classes(dataset: str, root: Path, found: list[str], spec) -> None:
    if list(found) != list(spec.classes):
        raise ZooError(f"--root {root}: {dataset} classes {found} differ from the canonical {list(spec.classes)}")


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def split_dir(dataset: str, split: str) -> Path:
    return data_home() / dataset / split


def _split_files(root: Path, fmt: str, split: str) -> list[Path]:
    if fmt == "imagefolder":
        return [root / split]
    return [p for p in sorted(root.rglob("*")) if p.is_file()]


def ingest(dataset: str, root: str | os.PathLike, *, splits: list[str] | None = None, force: bool = False,
           progress: bool = True, **opts) -> dict[str, Path]:
    """Decode `dataset` from `root` into the cache (once); returns {split: folder}.

    `dataset` is one of the known names, or any new name for an ImageFolder tree.
    Options: `classes=[...]` keeps a subset of classes (any format, labels renumbered in that order);
    STL-10: `resize=32`.
    """
    root = Path(root).expanduser()
    if opts.get("classes") and dataset in DATASETS:
        raise ZooError(f"--classes: ingest a class subset under a new name (e.g. {dataset}_{len(opts['classes'])}); "
                       f"'{dataset}' stands for all its classes, which its shipped weights and their evaluation expect")
    fmt = detect_format(dataset, root)
    if splits is None:  # the official releases have train and test; a tree, whichever of these folders it has
        known = DATASETS[dataset].splits if dataset in DATASETS else ("train", "valid", "test")
        splits = [s for s in known if (root / s).is_dir()] if fmt == "imagefolder" else ["train", "test"]
    out: dict[str, Path] = {}
    for split in splits:
        if fmt == "imagefolder" and not (root / split).is_dir():
            raise ZooError(f"--root {root}: split folder {split}/ not found")
        final = split_dir(dataset, split)
        with _locked(data_home() / f".{dataset}.lock"):
            fp = fingerprint(_split_files(root, fmt, split)) + json.dumps(opts, sort_keys=True, default=str)
            fp = hashlib.sha256(fp.encode()).hexdigest()
            meta_file = final / "meta.json"
            if not force and meta_file.exists():
                meta = json.loads(meta_file.read_text())
                if meta.get("source_fingerprint") == fp and meta.get("cache_version") == CACHE_VERSION:
                    out[split] = final
                    continue
            out[split] = _build_split(dataset, root, split, fmt, fp, final, progress, opts)
    return out


def _build_split(dataset, root, split, fmt, fp, final: Path, progress: bool, opts) -> Path:
    bars = []

    def make_bar(total: int):
        from tqdm import tqdm

        bars.append(tqdm(total=total, desc=f"ingest {dataset}/{split}", unit="img", mininterval=0.5))
        return bars[-1].update

    t0 = time.perf_counter()
    try:
        raw = read_split(dataset, root, split, fmt, progress=make_bar if progress else None, **opts)
    finally:
        for b in bars:
            b.close()
    seconds = time.perf_counter() - t0
    mean, std = channel_stats(raw.images)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{split}.tmp-", dir=final.parent))
    try:
        np.save(tmp / "images.npy", np.ascontiguousarray(raw.images))
        np.save(tmp / "labels.npy", raw.labels)
        for k, v in raw.extra.items():
            np.save(tmp / f"{k}.npy", v)
        meta = {
            "cache_version": CACHE_VERSION, "dataset": dataset, "split": split, "format": fmt,
            "source_root": str(root.resolve()), "source_fingerprint": fp, "options": opts,
            "num_samples": int(len(raw.labels)), "shape": list(raw.images.shape[1:]),
            "classes": list(raw.classes), "mean": mean, "std": std, "decode_seconds": round(seconds, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **raw.extra_meta,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if final.exists():  # replace: move the old one aside first so the swap is two renames
            trash = Path(tempfile.mkdtemp(prefix=f".{split}.old-", dir=final.parent))
            os.replace(final, trash / "split")
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


@dataclass
class CachedSplit:
    dataset: str
    split: str
    images: np.ndarray  # memory-mapped N x H x W x C uint8
    labels: np.ndarray
    meta: dict
    path: Path

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def norm(self) -> tuple[list[float], list[float]]:
        """Normalisation statistics: the train split's, which is what models are trained with."""
        return self.meta["norm_mean"], self.meta["norm_std"]


def open_split(dataset: str, split: str, *, labels: str = "fine") -> CachedSplit:
    d = split_dir(dataset, split)
    meta_file = d / "meta.json"
    if not meta_file.exists():
        known = sorted(p.name for p in (data_home() / dataset).iterdir()) if (data_home() / dataset).is_dir() else []
        have = f" (ingested splits: {', '.join(known)})" if known else ""
        if not known:  # maybe a typo: name the datasets that exist
            ingested = {p.name for p in data_home().iterdir() if p.is_dir()} if data_home().is_dir() else set()
            have = f" ({suggest(dataset, set(DATASETS) | ingested, 'known or ingested datasets')})"
        raise ZooError(
            f"dataset {dataset!r} split {split!r} has not been ingested into {data_home()}{have}; "
            f"run: python -m zoo ingest {dataset} --root DIR"
        )
    meta = json.loads(meta_file.read_text())
    train_meta = split_dir(dataset, "train") / "meta.json"
    stats = json.loads(train_meta.read_text()) if train_meta.exists() else meta
    meta["norm_mean"], meta["norm_std"] = stats["mean"], stats["std"]
    label_file = d / ("labels.npy" if labels == "fine" else f"{labels}_labels.npy")
    if not label_file.exists():
        raise ZooError(f"{dataset}/{split} has no {labels!r} labels (have: fine)")
    if labels != "fine":
        meta["classes"] = meta[f"{labels}_classes"]
    return CachedSplit(dataset, split, np.load(d / "images.npy", mmap_mode="r"), np.load(label_file), meta, d)
