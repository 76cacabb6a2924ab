"""Low-level file I/O shared by every layer: where zoo keeps its files, atomic writes, hashing, path containment.

Nothing here knows about models, datasets or the manifest; `data/`, `weights` and `engine` build on it. Every path
that comes from outside input (a manifest's `file`, a tag, an archive member, a derived `--out`) goes through
`contained` before zoo reads or writes it, so a hostile file cannot make zoo touch anything outside its root.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath

from .errors import ZooError

# What a tag may be wherever it becomes a file name: `name.dataset` with an optional `-labels` suffix, each part
# letters, digits and underscores (no separators, no dots beyond the one, no leading dash).
_PART = r"[A-Za-z0-9][A-Za-z0-9_]*"
TAG_RE = re.compile(rf"{_PART}\.{_PART}(-{_PART})?")
# Temp names this module (and the cache) create; a later run holding the lock removes leftovers of a killed one.
TEMP_MARKERS = (".tmp", ".old-", ".unpack-")


def zoo_home() -> Path:
    return Path(os.environ.get("ZOO_HOME", "~/.cache/zoo")).expanduser()


NAME_RE = re.compile(_PART)
# A name or tag becomes a file name with a suffix and a temp marker around it (`.TAG.onnx.XXXXXXXX.tmp.verify.json`):
# within these lengths that stays under the usual 255-byte limit, so a long tag is refused here, naming it, rather
# than failing as an unwritable folder when the first file is made.
MAX_NAME = 100
MAX_TAG = 200


def check_name(name: str, *, what: str) -> str:
    """`name` unchanged if it can be one part of a tag and one folder name (a dataset, a split): letters, digits and
    underscores, not starting with '_'. Anything else (a '/', '..', a '.') is one ZooError naming `what`."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
        raise ZooError(f"{what} {name!r} is not a valid name (letters, digits and underscores, at most {MAX_NAME})")
    return name


def check_tag(tag: str, *, what: str = "tag") -> str:
    """`tag` unchanged if it follows the registry's grammar (`name.dataset[-labels]`), else one ZooError."""
    if not isinstance(tag, str) or not TAG_RE.fullmatch(tag) or len(tag) > MAX_TAG:
        raise ZooError(f"{what} {tag!r} is not a valid tag (expected name.dataset or name.dataset-labels: letters, "
                       f"digits and underscores, at most {MAX_TAG} characters)")
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
             progress: bool = False, max_bytes: int | None = 4 << 30, deadline: float | None = None,
             timeout: float = 60.0) -> str:
    """Fetch url (http(s) or file://) to dest; the file appears only once its `algo` digest equals `digest`
    (None: no published checksum, nothing to compare). Returns the file's sha256.

    Limits, each a refusal rather than a file kept: `max_bytes` caps the body (None: no cap; the default 4 GiB is
    above every file zoo knows, callers that know the size pass a tighter one): a server that announces more is
    refused before the body is read, and one that sends more is cut off as soon as it passes the cap. `deadline`
    bounds the whole transfer in seconds, connection included (default: `$ZOO_DOWNLOAD_DEADLINE`, else 4 hours,
    enough for STL-10's 2.6 GB at 200 kB/s; the variable is for slower links, where no caller can pass a value),
    while `timeout` bounds each wait for data. A body shorter than its Content-Length is refused even without a
    digest: a connection cut short is not a file. Without Content-Length the body is read to its end (the progress
    bar has no total). On any failure nothing is left (no temp file; `dest` keeps its old content if it had one)
    and the one ZooError names `url` and `dest`."""
    if deadline is None:
        env = os.environ.get("ZOO_DOWNLOAD_DEADLINE", "")
        try:
            deadline = float(env) if env.strip() else 4 * 3600.0
        except ValueError:
            raise ZooError(f"ZOO_DOWNLOAD_DEADLINE={env!r} is not a number of seconds") from None
    if not deadline > 0:  # also catches NaN
        raise ZooError(f"download deadline {deadline!r} is not a positive number of seconds")
    end = time.monotonic() + deadline
    dest = Path(dest)
    where = f"{what} from {url} to {dest}"
    seen = {}

    def failed(why: object) -> ZooError:
        return ZooError(f"could not download {where}: {why}; nothing kept")

    def late(got: int) -> ZooError:
        return failed(f"not finished within the {deadline:g} s deadline ({got} bytes received; "
                      "set ZOO_DOWNLOAD_DEADLINE to allow longer)")

    def fetch(tmp: Path) -> None:
        # The socket timeout is fixed when the connection opens, so it is also clipped to the deadline: a read
        # blocks at most that long and the deadline is checked between reads (overshoot <= min(timeout, deadline)).
        try:
            src = urllib.request.urlopen(url, timeout=min(timeout, deadline))
        except (OSError, http.client.HTTPException, ValueError) as e:  # URLError/HTTPError are OSErrors
            # A plain URLError only wraps the cause (refused, unknown host, timeout); HTTPError says the status.
            reason = e.reason if type(e) is urllib.error.URLError else e
            if isinstance(reason, TimeoutError):
                raise (late(0) if time.monotonic() > end else
                       failed(f"no answer within {min(timeout, deadline):g} s")) from None
            raise failed(reason) from None
        with src, open(tmp, "wb") as out:
            header = src.headers.get("Content-Length")
            try:
                expected = int(header) if header is not None else None
            except ValueError:
                expected = -1
            if expected is not None and expected < 0:
                raise failed(f"malformed Content-Length {header!r}")
            if max_bytes is not None and expected is not None and expected > max_bytes:
                raise failed(f"the server announces {expected} bytes, more than the {max_bytes}-byte cap")
            h = hashlib.new(algo)
            h256 = h if algo == "sha256" else hashlib.sha256()
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=expected or None, unit="B", unit_scale=True, desc=f"download {dest.name}",
                           mininterval=0.5)
            got = 0
            try:
                while True:
                    if time.monotonic() > end:
                        raise late(got)
                    # Ask for one byte past the cap at most, so an oversized body stops right there; read1 returns
                    # whatever one socket read brings, so a trickling server cannot hold a 1 MiB read past the
                    # deadline.
                    want = 1 << 20 if max_bytes is None else min(1 << 20, max_bytes - got + 1)
                    try:
                        chunk = src.read1(want)
                    except TimeoutError:
                        raise (late(got) if time.monotonic() > end else
                               failed(f"no data for {min(timeout, deadline):g} s after {got} bytes")) from None
                    except (OSError, http.client.HTTPException) as e:  # a reset, a malformed chunk
                        raise failed(f"{e!r} after {got} bytes") from None
                    if not chunk:
                        break
                    got += len(chunk)
                    if max_bytes is not None and got > max_bytes:
                        raise failed(f"the body passes the {max_bytes}-byte cap; stopped")
                    try:
                        out.write(chunk)
                    except OSError as e:
                        raise ZooError(f"{disk_error(e, dest)} (downloading {url})") from None
                    h.update(chunk)
                    if h256 is not h:
                        h256.update(chunk)
                    if bar is not None:  # not `if bar`: a tqdm without a total has no truth value
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            if expected is not None and got != expected:
                raise failed(f"the body has {got} bytes but Content-Length announced {expected} "
                             "(connection cut short)")
        if digest is not None and h.hexdigest() != digest:
            raise ZooError(f"download of {url} to {dest} has {algo} {h.hexdigest()}, expected {digest}; "
                           "file discarded")
        seen["sha256"] = h256.hexdigest()

    try:
        atomic_write(dest, fetch)
    except ZooError:
        raise
    except (OSError, ValueError) as e:  # anything the handlers above did not name (a closing failure, say)
        raise failed(e) from None
    return seen["sha256"]
