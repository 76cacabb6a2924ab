"""Trained weights: safetensors files described by one JSON manifest.

A tag is `name.dataset` (or `name`, meaning the model's default dataset). The zoo wheel ships the manifest and the
small files only; the large ones are the `zoo-weights` distribution (zoo/weights/pyproject.toml) or are fetched on
first use. A file is looked up, in this order: next to the manifest (the package's `zoo/weights/`; in a checkout
every file is there), in `$ZOO_HOME/weights` (default `~/.cache/zoo/weights`), in the installed `zoo-weights`
distribution, then downloaded from `$ZOO_WEIGHTS_URL/<file>` or the entry's URL into `$ZOO_HOME/weights`, with
the sha256 checked before the file is moved into place. Every copy, wherever found, is sha256-checked before use.
`$ZOO_MANIFEST` points at another manifest (used by tests and private model stores).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .errors import ZooError, suggest
from .io import atomic_write, check_tag, contained, download, sha256_file, zoo_home
from .meta import WeightsMeta

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"
MANIFEST_FORMAT = 1


def manifest_path() -> Path:
    return Path(os.environ.get("ZOO_MANIFEST", PACKAGE_WEIGHTS / "manifest.json"))


def read_manifest(path: Path | None = None) -> dict[str, WeightsMeta]:
    path = path or manifest_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ZooError(f"weights manifest {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ZooError(f"weights manifest {path} has format {got!r}, expected {MANIFEST_FORMAT}")
    if not isinstance(data.get("weights"), dict):
        raise ZooError(f"weights manifest {path} has no 'weights' object")
    entries = {}
    for tag, entry in data["weights"].items():
        meta = WeightsMeta.from_dict(entry, source=f"weights manifest {path}: entry {tag!r}")
        if meta.tag != tag:
            raise ZooError(f"weights manifest {path}: entry {tag!r} describes {meta.tag!r}")
        entries[tag] = meta
    return entries


def list_pretrained(pattern: str | None = None) -> list[str]:
    return sorted(t for t in read_manifest() if pattern is None or fnmatch.fnmatch(t, pattern))


WEIGHTS_DIST = "zoo-weights"  # the distribution holding the large files (zoo/weights/pyproject.toml)
WEIGHTS_DIST_PACKAGE = "zoo_weights"  # its package folder in site-packages


def _dist_copy(name: str) -> Path | None:
    """The installed zoo-weights distribution's copy of `name` (a plain file name), or None.

    Found from the distribution's RECORD through importlib.metadata: nothing is imported, so no code of whatever
    happens to be called `zoo_weights` on sys.path runs; the file is then sha256-checked like any other copy."""
    from importlib import metadata

    try:
        dist = metadata.distribution(WEIGHTS_DIST)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.parts == (WEIGHTS_DIST_PACKAGE, name):  # an exact match: a RECORD line cannot point elsewhere
            path = Path(dist.locate_file(f))
            return path if path.is_file() else None
    return None


def copies(tag: str, entry: WeightsMeta | None = None) -> list[tuple[str, Path]]:
    """The existing copies of a tag's weights file, in lookup order, as (where, path); where is "package" (next to
    the manifest), "ZOO_HOME" or "zoo-weights". Not hash-checked: `weights_file` and `verify` do that."""
    entry = entry or read_manifest()[tag]
    # The manifest is data (a $ZOO_MANIFEST may come from anyone): its `file` names a file inside each store.
    what = f"manifest entry {tag}: file"
    found = [(where, p) for where, p in (("package", contained(manifest_path().parent, entry.file, what=what)),
                                          ("ZOO_HOME", contained(zoo_home() / "weights", entry.file, what=what)))
             if p.is_file()]
    dist = _dist_copy(entry.file)
    return found + ([("zoo-weights", dist)] if dist is not None else [])


def download_url(entry: WeightsMeta) -> str | None:
    """Where a missing file is downloaded from: `$ZOO_WEIGHTS_URL/<file>` (a mirror the user configured wins over
    the manifest's default), else the entry's `url`, else None."""
    base = os.environ.get("ZOO_WEIGHTS_URL")
    return f"{base.rstrip('/')}/{entry.file}" if base else (entry.url or None)


def missing_message(tag: str, entry: WeightsMeta) -> str:
    """The one error for a file found nowhere: the tag, the file, where zoo looked and the commands that get it."""
    dist = "the zoo-weights distribution" + (" (not installed)" if not _dist_installed() else "")
    return (f"weights file {entry.file} for {tag} is not installed (looked in {manifest_path().parent}, "
            f"{zoo_home() / 'weights'} and {dist}) and no download URL is configured (ZOO_WEIGHTS_URL or the "
            f"manifest's url); get it with: python -m zoo weights pull {tag} --from DIR_OR_URL (a zoo checkout's "
            "zoo/weights folder or a mirror), or install every large file with: "
            "pip install --no-build-isolation ./zoo/weights (in a zoo checkout)")


def _dist_installed() -> bool:
    from importlib import metadata

    try:
        metadata.distribution(WEIGHTS_DIST)
    except metadata.PackageNotFoundError:
        return False
    return True


def _source_url(source: str, tag: str, entry: WeightsMeta) -> str:
    """`--from DIR_OR_URL` as the URL of this entry's file: a base URL (http, https, file) gets `/<file>`; a folder
    must hold the file."""
    if "://" in source:
        scheme = source.split("://", 1)[0].lower()
        if scheme not in ("http", "https", "file"):
            raise ZooError(f"--from {source!r}: only http://, https:// and file:// URLs (or a folder) are supported")
        return f"{source.rstrip('/')}/{entry.file}"
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise ZooError(f"--from {source!r} is neither a folder nor an http(s):// or file:// URL")
    path = contained(folder, entry.file, what=f"manifest entry {tag}: file")
    if not path.is_file():
        raise ZooError(f"--from {source}: no {entry.file} there (needed for {tag})")
    return path.resolve().as_uri()


def _fetch(url: str, tag: str, entry: WeightsMeta, *, progress: bool) -> Path:
    """Download a file into $ZOO_HOME/weights: sha256-checked before the atomic move, nothing left on failure."""
    dest = contained(zoo_home() / "weights", entry.file, what=f"manifest entry {tag}: file")
    # The manifest declares the size: a server sending more is cut off just past it (the sha256 check would
    # refuse such a file anyway; the cap stops an endless body before it fills the disk).
    size = entry.size
    download(url, dest, entry.sha256, what="weights", progress=progress,
             max_bytes=size + (1 << 20) if isinstance(size, int) and size > 0 else 4 << 30)
    return dest


def _check(path: Path, tag: str, entry: WeightsMeta, where: str) -> Path:
    got = sha256_file(path)
    if got != entry.sha256:
        fix = ("reinstall the zoo-weights distribution built with this zoo's manifest, or run "
               f"python -m zoo weights pull {tag} --from DIR_OR_URL after removing the distribution"
               if where == "zoo-weights" else "delete it and retry")
        raise ZooError(f"weights file {path} has sha256 {got} but the manifest expects {entry.sha256}; "
                       f"the file is corrupt or was replaced; {fix}")
    return path


def weights_file(tag: str, *, progress: bool | None = None) -> tuple[Path, WeightsMeta]:
    """Local path of the (hash-verified) weights file for a full tag, downloading it if needed (with a progress bar
    when `progress`, default: when stderr is a terminal)."""
    entry = read_manifest()[tag]
    found = copies(tag, entry)
    if found:
        where, path = found[0]
        return _check(path, tag, entry, where), entry
    url = download_url(entry)
    if not url:
        raise ZooError(missing_message(tag, entry))
    if progress is None:
        progress = sys.stderr.isatty()
    return _check(_fetch(url, tag, entry, progress=progress), tag, entry, "ZOO_HOME"), entry


def _select(patterns: list[str], entries: dict[str, Any]) -> list[str]:
    """Manifest tags named by `patterns` (exact tags or wildcards such as 'resnet*'), in the order given."""
    out: list[str] = []
    for p in patterns:
        hits = [t for t in entries if fnmatch.fnmatchcase(t, p)] if any(c in p for c in "*?[") else [p]
        if not hits or hits[0] not in entries:
            raise ZooError(f"no weights match {p!r}; {suggest(p, entries, 'manifest tags')}")
        out += [t for t in hits if t not in out]
    return out


def pull(tags: list[str] | None = None, *, source: str | None = None, progress: bool = True,
         echo=None) -> list[tuple[str, str, Path]]:
    """Make the named tags' files (None: every manifest entry) available offline: each one whose first copy already
    verifies is kept; the others are fetched from `source` (a folder such as a checkout's zoo/weights, or an
    http(s)/file:// base URL; default: `$ZOO_WEIGHTS_URL` or the entry's url) into `$ZOO_HOME/weights`,
    sha256-checked before the atomic move. Returns (tag, "installed" | "pulled", path) for each tag; `echo(row)`
    is called with each one as it is done. The first failure stops with one ZooError; files pulled before it stay (each is
    complete and verified)."""
    entries = read_manifest()
    todo = list(entries) if tags is None else _select(tags, entries)
    done = []
    for tag in todo:
        entry = entries[tag]
        found = copies(tag, entry)
        if found and sha256_file(found[0][1]) == entry.sha256:
            row = (tag, "installed", found[0][1])
        else:
            if found and found[0][0] != "ZOO_HOME":  # a pulled file would be shadowed by the bad copy
                _check(found[0][1], tag, entry, found[0][0])
            # A bad copy in $ZOO_HOME/weights is what a pull replaces (atomically, only by a verified file).
            url = _source_url(source, tag, entry) if source else download_url(entry)
            if not url:
                if found:  # nowhere to get a good copy from: the error is what is wrong with the one there is
                    _check(found[0][1], tag, entry, found[0][0])
                raise ZooError(missing_message(tag, entry))
            row = (tag, "pulled", _fetch(url, tag, entry, progress=progress))
        done.append(row)
        if echo:
            echo(row)
    return done


def verify() -> list[tuple[str, str, Path, bool]]:
    """sha256 of every installed copy of every manifest entry: (tag, where, path, matches) per copy."""
    entries = read_manifest()
    return [(tag, where, path, sha256_file(path) == e.sha256)
            for tag, e in entries.items() for where, path in copies(tag, e)]


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise ZooError(f"{path} is not a regular file")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors' own error types: a header that lies about offsets, sizes or dtypes
        raise ZooError(f"{path} is not a readable safetensors file: {e}") from None


def read_embedded_meta(path: Path) -> WeightsMeta:
    """The WeightsMeta a zoo weights file carries in its safetensors header (checked: see WeightsMeta.from_dict)."""
    if not Path(path).is_file():  # a FIFO would block the read forever, a folder fails deep in safetensors
        raise ZooError(f"{path} is not a regular file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("zoo")
    except Exception as e:  # safetensors raises its own error types
        raise ZooError(f"{path} is not a readable safetensors file: {e}") from None
    if not raw:
        raise ZooError(f"{path} has no zoo metadata; it was not written by zoo")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ZooError(f"{path}: its zoo metadata is not valid JSON ({e}); refused") from None
    if not isinstance(meta, dict):
        raise ZooError(f"{path}: its zoo metadata is not a JSON object; refused")
    # The tag becomes file and folder names (exports, reports, publish): the registry grammar only.
    return WeightsMeta.from_dict(meta, source=f"{path}: embedded metadata")


def save_weights(model: nn.Module, path: Path, meta: WeightsMeta | Mapping[str, Any], *,
                 fp16: bool = False) -> WeightsMeta:
    """Write model weights + metadata atomically; returns the metadata completed with file, size and sha256."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if fp16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = WeightsMeta.from_dict(meta, source=str(path)).replace(dtype="float16" if fp16 else "float32")
    header = json.dumps(meta.to_dict())
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"zoo": header}))
    return meta.replace(file=path.name, size=path.stat().st_size, sha256=sha256_file(path))


def publish(path: Path, manifest: Path | None = None, *, tag: str | None = None, url: str | None = None,
            force: bool = False) -> str:
    """Copy a trained weights file next to the manifest and add/replace its entry.

    Every committed weights file stays in git history, so an entry is replaced only by weights that measure better
    on the test split (or with force=True): a worse or unmeasured file is refused before anything is written.
    Publishing the shipped file itself keeps its entry and only records `url`.
    """
    manifest = manifest or manifest_path()
    meta = read_embedded_meta(path)
    tag = check_tag(tag or meta.tag, what="--tag" if tag else f"{path}: embedded tag")
    dest = contained(manifest.parent, f"{tag}.safetensors", what="publish tag")
    entries = read_manifest(manifest) if manifest.exists() else {}
    new_top1 = (meta.metrics or {}).get("top1")
    old_top1 = (entries[tag].metrics or {}).get("top1") if tag in entries else None
    digest = sha256_file(path)
    if tag in entries and entries[tag].sha256 == digest:
        # The shipped file itself: keep its entry (its metrics may have been re-measured since), record a new URL.
        entries[tag] = entries[tag].replace(url=url if url is not None else entries[tag].url)
    elif not force and new_top1 is None:
        raise ZooError(f"{path} has no measured test metrics (its run did not evaluate on the test split); "
                       "evaluate before publishing, or pass --force")
    elif not force and meta.partial_data:
        raise ZooError(f"{path} was trained on a partial copy of {meta.dataset} ({', '.join(meta.partial_data)}: "
                       "ingest --allow-partial); its figures are not the dataset's; --force to publish anyway")
    elif not force and old_top1 is not None and new_top1 <= old_top1:
        raise ZooError(f"{path}: test top-1 {new_top1:.2%} does not beat the shipped {tag} ({old_top1:.2%}); "
                       "weights are re-committed only when they get better (--force to replace anyway)")
    else:
        if path.resolve() != dest.resolve():
            atomic_write(dest, lambda tmp: shutil.copyfile(path, tmp))  # never a half-written weights file
        entries[tag] = meta.replace(tag=tag, file=dest.name, size=dest.stat().st_size, sha256=digest, url=url or "")
    body = {t: entries[t].to_dict() for t in sorted(entries)}
    text = json.dumps({"format": MANIFEST_FORMAT, "weights": body}, indent=1) + "\n"
    atomic_write(manifest, lambda tmp: tmp.write_text(text))
    return tag
