"""Fetch a dataset's official files for users: `python -m zoo ingest cifar10 --download`.

Each file is checked against its published MD5 (the checksums torchvision uses) before it is kept; an archive
is unpacked into a temporary folder beside its destination and moved into place, so an interrupted or corrupt
download leaves nothing behind. Tests never reach the network: they point a mirror at a local file:// URL.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ZooError, suggest


@dataclass(frozen=True)
class Source:
    files: tuple[tuple[str, str | None], ...]  # (file name, published MD5 or None)
    mirrors: tuple[str, ...]  # base URLs, tried in order
    unpack: bool = True  # .tar.gz archives are unpacked; MNIST's .gz files are read as they are


SOURCES: dict[str, Source] = {
    "mnist": Source((("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                     ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
                     ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                     ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
                    ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
                    unpack=False),
    "cifar10": Source((("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
                      ("https://www.cs.toronto.edu/~kriz/",)),
    "cifar100": Source((("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
                       ("https://www.cs.toronto.edu/~kriz/",)),
    "stl10": Source((("stl10_binary.tar.gz", "91f7769df0f17e558f3565bffb0c7dfb"),),
                    ("http://ai.stanford.edu/~acoates/stl10/",)),
    # CINIC-10 publishes no checksum: the archive's sha256 is printed and recorded instead.
    "cinic10": Source((("CINIC-10.tar.gz", None),), ("https://datashare.ed.ac.uk/bitstream/handle/10283/3192/",)),
}
RECORD = ".zoo-download.json"  # what was fetched, from where, with which hashes


def download_root(dataset: str) -> Path:
    from ..io import zoo_home

    return zoo_home() / "downloads" / dataset


def download(dataset: str, root: str | os.PathLike | None = None, *, mirror: str | None = None,
             progress: bool = True) -> Path:
    """Fetch (once) and unpack `dataset`'s official files into `root` (default `$ZOO_HOME/downloads/<dataset>`);
    returns the folder to ingest from. `mirror` (or `$ZOO_DATA_MIRROR`) is a base URL used instead of the official
    ones; the same file names and checksums are expected there."""
    if dataset not in SOURCES:
        raise ZooError(f"--download: no official source for {dataset!r}; {suggest(dataset, SOURCES, 'downloadable')}"
                       "; ingest another dataset from a folder with --root")
    src = SOURCES[dataset]
    root = Path(root).expanduser() if root else download_root(dataset)
    record = json.loads((root / RECORD).read_text()) if (root / RECORD).exists() else {}
    mirror = mirror or os.environ.get("ZOO_DATA_MIRROR")
    bases = [mirror] if mirror else list(src.mirrors)
    try:
        _fetch_all(dataset, src, root, bases, record, progress)
    finally:
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()  # a first download that failed leaves no empty folder
    return root


def _fetch_all(dataset: str, src: Source, root: Path, bases: list[str], record: dict, progress: bool) -> None:
    from ..io import atomic_write
    from ..io import download as fetch

    for name, md5 in src.files:
        if name in record:  # fetched (and unpacked) by an earlier call
            continue
        dest = root / name
        errors = []
        for base in bases:
            url = base.rstrip("/") + "/" + name
            try:
                sha256 = fetch(url, dest, md5, algo="md5", what=f"{dataset} file {name}", progress=progress)
                break
            except ZooError as e:
                errors.append(str(e))
        else:
            raise ZooError(f"--download {dataset}: every source failed:\n  " + "\n  ".join(errors))
        if md5 is None:
            print(f"note: {name} has no published checksum; downloaded file sha256 {sha256}")
        if src.unpack:
            try:
                _unpack(dest, root)
            finally:
                dest.unlink()  # unpacked, or unusable: either way not kept
        record[name] = {"url": url, "md5": md5, "sha256": sha256, "date": time.strftime("%Y-%m-%d")}
        text = json.dumps(record, indent=1)
        atomic_write(root / RECORD, lambda tmp, text=text: tmp.write_text(text))


def _unpack(archive: Path, root: Path) -> None:
    """Extract into a temporary folder beside `root`'s entries, then move each top-level entry into place."""
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
    try:
        try:
            with tarfile.open(archive) as tf:
                tf.extractall(tmp, filter="data")  # no absolute paths, links out of the tree or device files
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ZooError(f"{archive}: cannot unpack: {e}") from None
        for entry in tmp.iterdir():
            target = root / entry.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(entry, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
