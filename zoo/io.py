"""Low-level file I/O shared by every layer: where zoo keeps its files, atomic writes, hashing, path containment.

Nothing here knows about models, datasets or the manifest; `data/`, `weights` and `engine` build on it. Every path
that comes from outside input (a manifest's `file`, a tag, an archive member, a derived `--out`) goes through
`contained` before zoo reads or writes it, so a hostile file cannot make zoo touch anything outside its root.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath

from .errors import ZooError

# What a tag may be wherever it becomes a file name: `name.dataset` with an optional `-labels` suffix, each part
# letters, digits and underscores (no separators, no dots beyond the one, no leading dash).
TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*\.[A-Za-z0-9][A-Za-z0-9_]*(-[A-Za-z0-9][A-Za-z0-9_]*)?")
# Temp names this module (and the cache) create; a later run holding the lock removes leftovers of a killed one.
TEMP_MARKERS = (".tmp", ".old-", ".unpack-")


def zoo_home() -> Path:
    return Path(os.environ.get("ZOO_HOME", "~/.cache/zoo")).expanduser()


def check_tag(tag: str, *, what: str = "tag") -> str:
    """`tag` unchanged if it follows the registry's grammar (`name.dataset[-labels]`), else one ZooError."""
    if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
        raise ZooError(f"{what} {tag!r} is not a valid tag (expected name.dataset or name.dataset-labels: letters, "
                       "digits and underscores)")
    return tag


def contained(root: Path, rel: str | os.PathLike, *, what: str) -> Path:
    """`root / rel`, refused (one ZooError naming `what`) if it would leave `root`: an absolute path, a `..`
    part, an empty name, or a symlink that resolves outside. `root` itself is trusted (the user chose it)."""
    if not isinstance(rel, str | os.PathLike):
        raise ZooError(f"{what} {rel!r} is not a path; refused")
    text = os.fspath(rel)
    parts = PurePath(text).parts
    if not text or "\0" in text or PurePath(text).is_absolute() or ".." in parts or not parts:
        raise ZooError(f"{what} {text!r} is not a plain relative path inside {root}; refused")
    path = Path(root) / text
    base = Path(root).resolve()
    if not path.resolve().is_relative_to(base):  # a symlink on the way that points elsewhere
        raise ZooError(f"{what} {text!r} resolves outside {root} (through a symbolic link); refused")
    return path


def _umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any thread could race on it.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()


def make_readable(path: Path) -> None:
    """Give a file made by mkstemp/mkdtemp (0600/0700) the mode a plain open()/mkdir() would have (0644/0755 under
    the usual umask): exports, weights, reports and the cache are written for others to read."""
    path.chmod((0o777 if path.is_dir() else 0o666) & ~UMASK)


def disk_error(e: OSError, path: Path) -> ZooError:
    """One clear error for a write that failed: a full disk or a read-only folder names the path."""
    if e.errno == errno.ENOSPC:
        return ZooError(f"no space left on the device holding {path}; free some space and retry")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ZooError(f"cannot write {path}: {e.strerror} (choose a writable folder)")
    return ZooError(f"cannot write {path}: {e}")


@contextmanager
def staged(path: Path, suffix: str = "") -> Iterator[Path]:
    """A temp file beside `path` (same folder, so the final rename is atomic) that becomes `path` when the block
    ends without error; on any error nothing is left: no temp file, and `path` keeps its old content. The temp
    name is unique per call (mkstemp) and carries `.tmp`, so a killed process's leftover is recognisable."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + suffix)
    except OSError as e:
        raise disk_error(e, path) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        make_readable(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise disk_error(e, path) from None
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """write(tmp) beside `path`, then rename over it: readers see the old file or the new one, never a partial
    one, and a failed write leaves no temp file behind. Each call has its own temp file, so processes writing the
    same file (DDP ranks building one FFCV file) never share one."""
    with staged(path) as tmp:
        write(tmp)


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temp files/folders a killed zoo process left in `folder` (names starting with '.' and holding one of
    TEMP_MARKERS). Call it only while holding the lock that guards `folder`, so no live writer's file is taken."""
    import shutil

    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if p.name.startswith(".") and any(m in p.name for m in TEMP_MARKERS):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def file_digest(path: Path, algo: str = "sha256") -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algo).hexdigest()


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


def download(url: str, dest: Path, digest: str | None, *, algo: str = "sha256", what: str = "file",
             progress: bool = False) -> str:
    """Fetch url (http(s) or file://) to dest; the file appears only once its `algo` digest equals `digest`
    (None: no published checksum, nothing to compare). Returns the file's sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    seen = {}

    def fetch(tmp: Path) -> None:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as src:
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=int(src.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                           desc=f"download {dest.name}", mininterval=0.5)
            for chunk in iter(lambda: src.read(1 << 20), b""):
                out.write(chunk)
                if bar:
                    bar.update(len(chunk))
            if bar:
                bar.close()
        got = file_digest(tmp, algo)
        if digest is not None and got != digest:
            raise ZooError(f"download of {url} has {algo} {got}, expected {digest}; file discarded")
        seen["sha256"] = got if algo == "sha256" else sha256_file(tmp)

    try:
        atomic_write(dest, fetch)
    except ZooError:
        raise
    except (OSError, ValueError) as e:  # network errors are OSErrors; a malformed URL is a ValueError
        raise ZooError(f"could not download {what} from {url}: {e}") from None
    return seen["sha256"]
