"""Decode-once cache: `<data_home>/<dataset>/<split>/{images.npy, labels.npy, meta.json}`.

images.npy is uint8 N x H x W x C, memory-mapped on open. `<split>` is a symbolic link to a version folder
`.<split>.v-<token>/`: a split is built in a temporary folder under a per-dataset file lock, renamed to a version
folder, and published by replacing the link with one rename, so a crash or a concurrent ingest never leaves a split
half-written or missing; the next locked run removes what a killed one left. A changed source (file list, sizes,
mtimes) rebuilds the split. Reading takes no lock, and neither does an ingest that finds its split current, so a
read-only cache stays usable. `open_split` checks the files against meta.json (shapes, dtypes, label range, counts,
statistics) without reading the images, so a damaged cache is one error saying how to rebuild it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ZooError, suggest
from ..io import NAME_RE, check_name, disk_error, make_readable, remove_stale_temps, zoo_home
from . import readers
from .download import SOURCES
from .native import channel_histogram
from .specs import DATASETS

CACHE_VERSION = 1


def data_home() -> Path:
    env = os.environ.get("ZOO_DATA")
    if env:
        return Path(env).expanduser()
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


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz", ".zip")


def detect_format(dataset: str, root: Path) -> str:
    if not root.exists():
        raise ZooError(f"--root {root} does not exist")
    if root.is_file():  # --root names a folder; an archive is the commonest mix-up
        if root.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise ZooError(f"--root {root} is an archive: extract it (e.g. tar xf {root} -C DIR) and pass the "
                           f"folder as --root DIR" + (f", or use --download to fetch and unpack {dataset}'s "
                                                      "official files" if dataset in SOURCES else ""))
        raise ZooError(f"--root {root} is a file; pass the folder that holds the dataset's files")
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
    for key, top in (("resize", 1024), ("threads", 1024)):
        v = opts.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top):
            raise ZooError(f"--{key} {v!r}: expected an integer in 1..{top}")
    if opts.get("resize") and fmt != "stl10":
        raise ZooError(f"--resize applies to STL-10 only; {dataset} images are stored at their own size")
    if fmt == "imagefolder":  # the class names are the folder names: check them before decoding anything
        folders = readers.class_folders(root / split)
        if spec and spec.classes is not None:  # wrong tree
            _check_classes(dataset, root, folders, spec)
        if opts.get("classes"):  # a --classes typo, named before a long decode rather than after it
            readers.check_subset(folders, opts["classes"], root / split)
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
        shown = found if len(found) <= 12 else [*found[:12], "..."]
        raise ZooError(f"--root {root}: {dataset} has {len(spec.classes)} classes, found {len(found)} {shown} that "
                       f"differ from the canonical {list(spec.classes)[:12]}{' ...' if len(spec.classes) > 12 else ''};"
                       " ingest other data under its own name")


def _check_canonical(dataset: str, split: str, raw: readers.RawSplit, root: Path, opts: dict,
                     allow_partial: bool) -> dict:
    """A canonical name stands for the published dataset: its image shape and split sizes (class names were checked
    before decoding or by read_split). Returns what meta.json records of it: {"partial": True, ...} for a smaller
    split ingested with allow_partial, else {}. A new name (or a --classes subset, which needs one) is not checked."""
    spec = DATASETS.get(dataset)
    if spec is None:
        return {}
    side = opts.get("resize") or spec.img_size
    want_shape = (side, side, spec.in_chans)
    if tuple(raw.images.shape[1:]) != want_shape:
        raise ZooError(f"--root {root}: {dataset}/{split} images are {tuple(raw.images.shape[1:])}, the published "
                       f"{dataset} has {want_shape}; ingest other data under its own name")
    want, n = spec.split_size(split), len(raw.labels)
    if want is None:
        raise ZooError(f"--splits: {dataset} has no split {split!r} (published: {', '.join(spec.splits)})")
    if n > want:
        raise ZooError(f"--root {root}: {dataset}/{split} has {n} images, more than the published {want}; "
                       "ingest other data under its own name")
    if n < want and not allow_partial:
        raise ZooError(f"--root {root}: {dataset}/{split} has {n} images, the published split has {want}: a partial "
                       "copy (an interrupted download or extraction?). Fetch the whole dataset (--download), ingest "
                       "the subset under its own name, or pass --allow-partial to cache it marked partial (every "
                       "weights file trained on it says so)")
    return {"partial": True, "published_samples": want} if n < want else {}


@contextmanager
def _locked(path: Path):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")
    except OSError as e:
        raise disk_error(e, path) from None
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def split_dir(dataset: str, split: str) -> Path:
    """The split's path: a symbolic link to its current version folder (or, in a cache written before versions, the
    folder itself). Readers go through it; a rebuild swaps it with one rename."""
    # Both become folder names under the cache: a dataset called '../x' must not read or write outside it.
    return data_home() / check_name(dataset, what="dataset") / check_name(split, what="split")


def _split_files(root: Path, fmt: str, split: str) -> list[Path]:
    if fmt == "imagefolder":
        return [root / split]
    return [p for p in sorted(root.rglob("*")) if p.is_file()]


INGEST_OPTIONS = {"classes", "resize", "threads"}  # what read_split reads


def ingest(dataset: str, root: str | os.PathLike, *, splits: list[str] | None = None, force: bool = False,
           progress: bool = True, allow_partial: bool = False, **opts) -> dict[str, Path]:
    """Decode `dataset` from `root` into the cache (once); returns {split: folder}.

    `dataset` is one of the known names, or any new name for an ImageFolder tree.
    Options: `classes=[...]` keeps a subset of classes (any format, labels renumbered in that order);
    STL-10: `resize=32`. A known name is checked against the published dataset (classes, image shape, split sizes);
    `allow_partial=True` accepts smaller splits, recorded as `"partial": true` in meta.json.
    """
    unknown = sorted(set(opts) - INGEST_OPTIONS)
    if unknown:  # a typo (resise=32) used to be ignored, rc 0, and the split cached without it
        raise ZooError(f"ingest: unknown option(s) {', '.join(unknown)}; options: {', '.join(sorted(INGEST_OPTIONS))}")
    if not isinstance(root, str | os.PathLike) or not str(root):
        raise ZooError(f"ingest {dataset}: root must be a folder path, got {root!r}")
    root = Path(root).expanduser()
    if opts.get("classes") and dataset in DATASETS:
        raise ZooError(f"--classes: ingest a class subset under a new name (e.g. {dataset}_{len(opts['classes'])}); "
                       f"'{dataset}' stands for all its classes, which its shipped weights and their evaluation expect")
    split_dir(dataset, "train")  # the name is checked before anything is read
    fmt = detect_format(dataset, root)
    if splits is None:  # the official releases have train and test; a tree, whichever of these folders it has
        known = DATASETS[dataset].splits if dataset in DATASETS else ("train", "valid", "test")
        splits = [s for s in known if (root / s).is_dir()] if fmt == "imagefolder" else ["train", "test"]
    out: dict[str, Path] = {}
    for split in splits:
        final = split_dir(dataset, split)
        if fmt == "imagefolder" and not (root / split).is_dir():
            raise ZooError(f"--root {root}: split folder {split}/ not found")
        fp = fingerprint(_split_files(root, fmt, split)) + json.dumps(opts, sort_keys=True, default=str)
        fp = hashlib.sha256(fp.encode()).hexdigest()
        # Checked first without the lock: a current split is only read, so a read-only cache stays usable.
        if not force and _current(dataset, split, fp, allow_partial):
            out[split] = final
            continue
        with _locked(data_home() / f".{dataset}.lock"):
            # Holding the lock, nothing else writes here: what a killed ingest left behind can go.
            remove_stale_temps(final.parent)
            _remove_unused_versions(final.parent)
            if not force and _current(dataset, split, fp, allow_partial):  # built while this one waited
                out[split] = final
                continue
            out[split] = _build_split(dataset, root, split, fmt, fp, final, progress, opts, allow_partial)
    return out


def _current(dataset: str, split: str, fp: str, allow_partial: bool) -> bool:
    """Whether the cached split was built from this very source and opens cleanly (a damaged one is rebuilt)."""
    meta_file = split_dir(dataset, split) / "meta.json"
    try:
        if not meta_file.is_file():  # also not a FIFO, whose read would block
            return False
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or meta.get("source_fingerprint") != fp or meta.get("cache_version") != CACHE_VERSION:
        return False
    try:
        open_split(dataset, split)
    except ZooError:
        return False
    if meta.get("partial") and not allow_partial:  # the same partial source a build would refuse
        raise ZooError(f"{dataset}/{split} was cached from a partial copy ({meta.get('num_samples')} of "
                       f"{meta.get('published_samples')} images, ingested with --allow-partial); pass "
                       "--allow-partial again to keep using it, or ingest the whole dataset")
    return True


# A split's version folders: `.<split>.v-<token>`, the split's name a link to one of them.
_VERSION_RE = re.compile(r"\.(?P<split>[A-Za-z0-9][A-Za-z0-9_]*)\.v-[A-Za-z0-9_]+")


def _remove_unused_versions(folder: Path) -> None:
    """Delete version folders no split link points to: the old version of a replaced split when the process died
    before removing it, or a new one built before the link swap. Only zoo's own `.<split>.v-*` names are touched.
    Call it only under the dataset's lock (a version being built is not yet linked)."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        m = _VERSION_RE.fullmatch(p.name)
        if not m or not p.is_dir() or p.is_symlink():
            continue
        link = folder / m["split"]
        if link.is_symlink() and os.readlink(link) == p.name:
            continue
        shutil.rmtree(p, ignore_errors=True)


def _build_split(dataset, root, split, fmt, fp, final: Path, progress: bool, opts, allow_partial: bool) -> Path:
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
    partial = _check_canonical(dataset, split, raw, root, opts, allow_partial)
    if not len(raw.labels):
        raise ZooError(f"--root {root}: {dataset}/{split} has no images")
    mean, std = channel_stats(raw.images)
    if split == "train" and min(std) <= 0:  # inputs are divided by the train std: a constant channel cannot be
        raise ZooError(f"--root {root}: every {dataset}/{split} image has the same value in channel "
                       f"{std.index(min(std))} (std 0), so it cannot be normalised")
    meta = {
        "cache_version": CACHE_VERSION, "dataset": dataset, "split": split, "format": fmt,
        "source_root": str(root.resolve()), "source_fingerprint": fp, "options": opts,
        "num_samples": int(len(raw.labels)), "shape": list(raw.images.shape[1:]),
        "classes": list(raw.classes), "mean": mean, "std": std, "decode_seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **partial, **raw.extra_meta,
    }
    folder = final.parent
    tmp, writing = None, folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Built under a temp name (a killed build is recognisable and removed by the next locked run), renamed to
        # a version folder once complete, then published by swapping the split's link: one atomic rename.
        tmp = Path(tempfile.mkdtemp(prefix=f".{split}.tmp-", dir=folder))
        arrays = {"images": np.ascontiguousarray(raw.images), "labels": raw.labels, **raw.extra}
        for name, arr in arrays.items():
            writing = tmp / f"{name}.npy"
            np.save(writing, arr)
        writing = tmp / "meta.json"
        writing.write_text(json.dumps(meta, indent=1))
        for p in [tmp, *tmp.iterdir()]:
            make_readable(p)  # mkdtemp's 0700: the cache is for every user of the machine to read, like any file
        token = tmp.name[len(f".{split}.tmp-"):]
        version = folder / f".{split}.v-{token}"
        writing = version
        os.replace(tmp, version)
        tmp = None
        _point(final, version)
    except OSError as e:
        raise disk_error(e, writing) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _point(final: Path, version: Path) -> None:
    """Make the link `final` point to `version` with one rename (os.replace of a new link over the old one), so a
    reader finds the old split or the new one, never none; then remove the old version."""
    old = final.parent / os.readlink(final) if final.is_symlink() else None
    link = final.parent / f".{final.name}.tmp-link-{version.name.rsplit('-', 1)[-1]}"
    os.symlink(version.name, link)  # relative: the cache folder can be moved
    try:
        if final.exists() and not final.is_symlink():
            # A cache written before versioned splits holds a real folder, which no rename can replace with a
            # link: moved aside first, this one time (a reader in between finds no split and can retry).
            aside = final.parent / f".{final.name}.old-{version.name.rsplit('-', 1)[-1]}"
            os.replace(final, aside)
            os.replace(link, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(link, final)
    finally:
        if os.path.lexists(link):
            link.unlink()
    if old is not None and old != version and _VERSION_RE.fullmatch(old.name) and old.parent == final.parent:
        shutil.rmtree(old, ignore_errors=True)  # zoo's own old version only; readers' open mmaps stay valid


def partial_splits(dataset: str) -> list[str]:
    """The splits of `dataset` cached from a partial copy (ingested with allow_partial), for labelling what is trained
    or measured on them."""
    out = []
    home = data_home() / dataset
    for p in sorted(home.iterdir()) if home.is_dir() else []:
        if p.name.startswith("."):
            continue
        try:
            if (p / "meta.json").is_file() and json.loads((p / "meta.json").read_text()).get("partial"):
                out.append(p.name)
        except (OSError, ValueError, AttributeError):
            continue
    return out


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


def _damaged(path: Path, dataset: str, why: str) -> ZooError:
    return ZooError(f"{path}: {why}; the cache is damaged: rebuild it with "
                    f"python -m zoo ingest {dataset} --root DIR --force")


def _read_meta(path: Path, dataset: str) -> dict:
    """meta.json, parsed and checked for what readers use: classes, shape, per-channel mean/std."""
    try:
        _check_regular(path, dataset)
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _damaged(path, dataset, f"unreadable ({e})") from None
    if not isinstance(meta, dict):
        raise _damaged(path, dataset, "not a JSON object")
    classes, shape = meta.get("classes"), meta.get("shape")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise _damaged(path, dataset, "'classes' is not a non-empty list of names")
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(v) is int and v > 0 for v in shape)):
        raise _damaged(path, dataset, f"'shape' {shape!r} is not [height, width, channels]")
    for key in ("mean", "std"):
        v = meta.get(key)
        if not (isinstance(v, list) and len(v) == shape[2]
                and all(type(x) in (int, float) and 0 <= x <= 1 for x in v)):  # NaN fails 0 <= x
            raise _damaged(path, dataset, f"'{key}' {v!r} is not {shape[2]} per-channel value(s) in [0, 1]")
    return meta


def _check_regular(path: Path, dataset: str) -> None:
    """A cache file must be a regular file (through links): opening a FIFO put there would block the reader forever,
    a directory or device is no cache file. FileNotFoundError passes through (open_split retries on it)."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise _damaged(path, dataset, "not a regular file")


def _load(path: Path, dataset: str, **kw) -> np.ndarray:
    try:
        _check_regular(path, dataset)
        return np.load(path, **kw)  # allow_pickle stays False: an object array is refused, not run
    except FileNotFoundError:
        raise  # a version removed by a rebuild between the link's resolution and this read: open_split retries
    except (OSError, ValueError, EOFError, MemoryError) as e:  # MemoryError: a header claiming terabytes
        raise _damaged(path, dataset, f"unreadable ({e})") from None


def _ingested() -> set[str]:
    return {p.name for p in data_home().iterdir() if p.is_dir() and not p.name.startswith(".")} \
        if data_home().is_dir() else set()


def open_split(dataset: str, split: str, *, labels: str = "fine") -> CachedSplit:
    """Open a cached split: images memory-mapped, labels read; every file checked against meta.json first."""
    if isinstance(dataset, str) and not NAME_RE.fullmatch(dataset):  # 'cifar-10': say which name was meant
        raise ZooError(f"dataset {dataset!r} is not a valid name (letters, digits and underscores); "
                       + suggest(dataset.replace("-", "").lower(), set(DATASETS) | _ingested(),
                                 "known or ingested datasets"))
    link = split_dir(dataset, split)
    for attempt in range(3):
        # Every file is read from the one version folder the link points to now: a rebuild swapping the link
        # meanwhile cannot pair one version's labels with another's images. If that version is removed before its
        # files are opened (a rebuild finishing in between), the new one is read instead.
        d = _resolve(link, dataset)
        try:
            return _open_version(dataset, split, labels, d)
        except FileNotFoundError:
            if attempt == 2 or _resolve(link, dataset) == d:
                break
    known = [p.name for p in (data_home() / dataset).iterdir() if not p.name.startswith(".")] \
        if (data_home() / dataset).is_dir() else []
    have = f" (ingested splits: {', '.join(sorted(known))})" if known else ""
    if not known and dataset not in DATASETS:  # maybe a typo: name the datasets that exist, not this one
        have = f" ({suggest(dataset, (set(DATASETS) | _ingested()) - {dataset}, 'known or ingested datasets')})"
    get = f"--root DIR{' (or --download)' if dataset in SOURCES else ''}"
    raise ZooError(
        f"dataset {dataset!r} split {split!r} has not been ingested into {data_home()}{have}; "
        f"run: python -m zoo ingest {dataset} {get}"
    )


def _resolve(link: Path, dataset: str) -> Path:
    """The version folder a split's link points to; a link that points to itself (or round a loop) is a damaged
    cache, not a RuntimeError from pathlib."""
    try:
        return link.resolve()
    except (RuntimeError, OSError) as e:  # "Symlink loop" (RuntimeError before Python 3.13, OSError after)
        raise _damaged(link, dataset, f"unreadable link ({e})") from None


def _open_version(dataset: str, split: str, labels: str, d: Path) -> CachedSplit:
    """Raises FileNotFoundError when meta.json is missing (not ingested, or a version just removed)."""
    meta_file = d / "meta.json"
    if not meta_file.exists():
        raise FileNotFoundError(meta_file)
    meta = _read_meta(meta_file, dataset)
    train_meta = split_dir(dataset, "train") / "meta.json"
    stats = _read_meta(train_meta, dataset) if split != "train" and train_meta.exists() else meta
    if min(stats["std"]) <= 0:  # inputs are divided by it: NaN/inf inputs, which training would blame on the LR
        where = train_meta if stats is not meta else meta_file
        raise _damaged(where, dataset, f"'std' {stats['std']} has a zero: a constant channel cannot be normalised")
    meta["norm_mean"], meta["norm_std"] = stats["mean"], stats["std"]
    label_file = d / ("labels.npy" if labels == "fine" else f"{labels}_labels.npy")
    if not label_file.exists():
        raise ZooError(f"{dataset}/{split} has no {labels!r} labels (have: fine)")
    if labels != "fine":
        meta["classes"] = meta.get(f"{labels}_classes")
        if not (isinstance(meta["classes"], list) and meta["classes"]):
            raise _damaged(meta_file, dataset, f"no '{labels}_classes' list for {label_file.name}")
    images_file = d / "images.npy"
    # mmap_mode: only the header is read; a file shorter than its header says fails here (mmap length check).
    images = _load(images_file, dataset, mmap_mode="r")
    # Memory-mapped first, so a header that claims more labels than the file holds fails the mmap length check
    # instead of allocating what it claims; then copied (labels are small).
    y = np.array(_load(label_file, dataset, mmap_mode="r"))
    if images.dtype != np.uint8 or images.ndim != 4 or list(images.shape[1:]) != meta["shape"]:
        raise _damaged(images_file, dataset, f"holds {images.dtype} {images.shape}, meta.json says uint8 "
                                             f"N x {' x '.join(map(str, meta['shape']))}")
    n = meta.get("num_samples", len(images))
    if len(images) != n:
        raise _damaged(images_file, dataset, f"holds {len(images)} images, meta.json says {n}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(images):
        raise _damaged(label_file, dataset, f"holds {y.dtype} {y.shape}, expected {len(images)} integer labels "
                                            f"(one per image in {images_file.name})")
    if y.size and (y.min() < 0 or y.max() >= len(meta["classes"])):
        raise _damaged(label_file, dataset, f"label {int(y.min() if y.min() < 0 else y.max())} outside "
                                            f"0..{len(meta['classes']) - 1} ({len(meta['classes'])} classes)")
    return CachedSplit(dataset, split, images, y.astype(np.int64, copy=False), meta, d)
