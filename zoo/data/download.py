"""Fetch a dataset's official files for users: `python -m zoo ingest cifar10 --download`.

Each file is checked against its published MD5 (the checksums torchvision uses) before it is kept, and its
download is capped near its known size. An archive is downloaded and unpacked inside a fresh temporary folder in
the destination, and only its top-level entries move into place, and only where nothing of that name exists yet:
the destination may be a user's own folder (`--root DIR`), so nothing there is ever deleted or overwritten. An
interrupted, corrupt or refused download leaves nothing behind. Tests never reach the network: they serve the
files from file:// mirrors or a local HTTP server on 127.0.0.1.
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
from typing import NamedTuple

from ..errors import ZooError, suggest
from ..io import atomic_write, contained, disk_error, zoo_home
from ..io import download as fetch


class File(NamedTuple):
    name: str
    md5: str | None  # published MD5, or None where the host publishes none
    size: int | None = None  # known size in bytes: the download is capped at size * (1 + slack) + 1 MiB
    slack: float = 0.1  # room for a mirror's copy to differ before its checksum refuses it


@dataclass(frozen=True)
class Source:
    files: tuple[tuple, ...]  # File entries (plain (name, md5[, size[, slack]]) tuples are read as File)
    mirrors: tuple[str, ...]  # base URLs, tried in order
    unpack: bool = True  # .tar.gz archives are unpacked; MNIST's .gz files are read as they are


SOURCES: dict[str, Source] = {
    "mnist": Source((File("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
                     File("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28881),
                     File("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1648877),
                     File("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4542)),
                    ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
                    unpack=False),
    "cifar10": Source((File("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", 170498071),),
                      ("https://www.cs.toronto.edu/~kriz/",)),
    "cifar100": Source((File("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", 169001437),),
                       ("https://www.cs.toronto.edu/~kriz/",)),
    "stl10": Source((File("stl10_binary.tar.gz", "91f7769df0f17e558f3565bffb0c7dfb", 2640397119),),
                    ("http://ai.stanford.edu/~acoates/stl10/",)),
    # CINIC-10 publishes no checksum: the archive's sha256 is printed and recorded instead. Its size is known only
    # approximately (about 687.7 MB), hence the generous 50% slack: the cap only has to stop a runaway body.
    "cinic10": Source((File("CINIC-10.tar.gz", None, 687696720, slack=0.5),),
                      ("https://datashare.ed.ac.uk/bitstream/handle/10283/3192/",)),
}
RECORD = ".zoo-download.json"  # what was fetched, from where, with which hashes
# Bounds on what an archive may unpack to, far above any official archive (CINIC-10: 270,000 images, the others a
# few dozen files; image data compresses little) yet low enough that a hostile archive cannot fill the disk or the
# inode table before it is refused.
MAX_MEMBERS = 1_000_000
MAX_RATIO = 20  # unpacked bytes per archive byte, on top of MAX_SLACK_BYTES
MAX_SLACK_BYTES = 1 << 30


def download_root(dataset: str) -> Path:
    return zoo_home() / "downloads" / dataset


def download(dataset: str, root: str | os.PathLike | None = None, *, mirror: str | None = None,
             progress: bool = True) -> Path:
    """Fetch (once) and unpack `dataset`'s official files into `root` (default `$ZOO_HOME/downloads/<dataset>`);
    returns the folder to ingest from. `mirror` (or `$ZOO_DATA_MIRROR`) is a base URL used instead of the official
    ones; the same file names and checksums are expected there. Nothing already in `root` is deleted or
    overwritten: an archive entry or file whose name is taken there is one ZooError naming it."""
    if dataset not in SOURCES:
        raise ZooError(f"--download: no official source for {dataset!r}; {suggest(dataset, SOURCES, 'downloadable')}"
                       "; ingest another dataset from a folder with --root")
    src = SOURCES[dataset]
    root = Path(root).expanduser() if root else download_root(dataset)
    created = not root.exists()
    try:
        record = json.loads((root / RECORD).read_text()) if (root / RECORD).is_file() else {}
    except (OSError, ValueError) as e:
        raise ZooError(f"{root / RECORD}: unreadable download record ({e}); move it away to download again") from None
    if not isinstance(record, dict):
        raise ZooError(f"{root / RECORD}: not a download record (a JSON object); move it away to download again")
    mirror = mirror or os.environ.get("ZOO_DATA_MIRROR")
    bases = [mirror] if mirror else list(src.mirrors)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise disk_error(e, root) from None
    try:
        _fetch_all(dataset, src, root, bases, record, progress)
    finally:
        # A first download that failed leaves no empty folder; a folder the user made stays, even empty.
        if created and root.is_dir() and not any(root.iterdir()):
            root.rmdir()
    return root


def _fetch_all(dataset: str, src: Source, root: Path, bases: list[str], record: dict, progress: bool) -> None:
    for name, md5, size, slack in (File(*f) for f in src.files):
        if name in record:  # fetched (and unpacked) by an earlier call
            continue
        cap = None if size is None else int(size * (1 + slack)) + (1 << 20)
        if src.unpack:
            # The archive itself lives in the temporary folder too: a user's file of the same name in `root` is
            # neither overwritten by the download nor deleted after unpacking.
            work = _temp_dir(root)
            try:
                url, sha256 = _fetch(dataset, name, md5, cap, work / name, bases, progress)
                try:
                    _unpack(work / name, root, work)
                except ZooError as e:
                    raise ZooError(f"--download {dataset} from {url}: {e}") from None
            finally:
                shutil.rmtree(work, ignore_errors=True)
        else:
            dest = root / name
            if os.path.lexists(dest):  # checked before the download, so no bandwidth is spent on a refusal
                raise ZooError(f"--download {dataset}: {dest} already exists and was not downloaded by zoo; "
                               "nothing is overwritten: move it away or choose another --root")
            url, sha256 = _fetch(dataset, name, md5, cap, dest, bases, progress)
        if md5 is None:
            print(f"note: {name} has no published checksum; downloaded file sha256 {sha256}")
        record[name] = {"url": url, "md5": md5, "sha256": sha256, "date": time.strftime("%Y-%m-%d")}
        text = json.dumps(record, indent=1)
        atomic_write(root / RECORD, lambda tmp, text=text: tmp.write_text(text))


def _fetch(dataset: str, name: str, md5: str | None, cap: int | None, dest: Path, bases: list[str],
           progress: bool) -> tuple[str, str]:
    """(url, sha256) of the first source that delivers `name` intact to `dest`; one ZooError listing each failure."""
    errors = []
    for base in bases:
        url = base.rstrip("/") + "/" + name
        kw = {} if cap is None else {"max_bytes": cap}
        try:
            return url, fetch(url, dest, md5, algo="md5", what=f"{dataset} file {name}", progress=progress, **kw)
        except ZooError as e:
            errors.append(str(e))
    raise ZooError(f"--download {dataset}: every source failed:\n  " + "\n  ".join(errors))


def _temp_dir(root: Path) -> Path:
    try:
        # The `.unpack-` prefix is one of io.TEMP_MARKERS, so a killed run's leftover is recognisable as zoo's.
        return Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
    except OSError as e:
        raise disk_error(e, root) from None


def _member_filter(archive: Path, tree: Path):
    """tarfile's "data" filter (no absolute paths, no escapes, no devices, sane modes) behind zoo's own checks,
    which run first so a refusal names the member plainly: no links at all (no official archive has one, and a
    link is the usual way out of the tree), every name inside the tree, and bounded member count and total size."""
    limit = MAX_RATIO * archive.stat().st_size + MAX_SLACK_BYTES
    seen = {"members": 0, "bytes": 0}

    def check(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        seen["members"] += 1
        seen["bytes"] += max(member.size, 0)
        if seen["members"] > MAX_MEMBERS:
            raise ZooError(f"{archive.name}: cannot unpack: more than {MAX_MEMBERS:,} members; refused as no "
                           "dataset archive")
        if seen["bytes"] > limit:
            raise ZooError(f"{archive.name}: cannot unpack: more than {limit:,} bytes (the archive has "
                           f"{archive.stat().st_size:,}); refused as no dataset archive")
        if member.issym() or member.islnk():
            kind = "symbolic link" if member.issym() else "hard link"
            raise ZooError(f"{archive.name}: cannot unpack: member {member.name!r} is a {kind} (to "
                           f"{member.linkname!r}); links are refused in a dataset archive")
        if member.name.strip("/") in ("", ".") and member.isdir():
            return None  # the archive's own root ("./"): the tree folder already stands for it
        contained(tree, member.name, what=f"{archive.name}: cannot unpack: member")
        return tarfile.data_filter(member, path)

    return check


def _unpack(archive: Path, root: Path, work: Path) -> None:
    """Extract `archive` into `work`/tree, then move each top-level entry into `root`, none of them if any name is
    taken there: a user's folder (say `DIR/train/`) is never merged into, replaced or deleted."""
    tree = work / "tree"
    tree.mkdir()
    try:
        with tarfile.open(archive) as tf:
            tf.extractall(tree, filter=_member_filter(archive, tree))
    except (tarfile.TarError, OSError, EOFError) as e:  # FilterError (an escape the data filter caught) included
        raise ZooError(f"{archive.name}: cannot unpack: {e}") from None
    entries = sorted(tree.iterdir())
    targets = [contained(root, e.name, what=f"{archive.name}: entry") for e in entries]
    taken = [t for t in targets if os.path.lexists(t) or t.name == RECORD]
    if taken:
        raise ZooError(f"{archive.name}: cannot unpack into {root}: {', '.join(str(t) for t in taken)} already "
                       f"exist{'s' if len(taken) == 1 else ''}; nothing is overwritten, nothing was moved: move "
                       "them away or choose another --root")
    for entry, target in zip(entries, targets, strict=True):
        # Checked again right before the move (rename would replace a file or an empty folder that appeared since).
        if os.path.lexists(target):
            raise ZooError(f"{archive.name}: {target} appeared while unpacking; it is left as it is")
        os.rename(entry, target)
