"""Trained weights: safetensors files described by one JSON manifest.

A tag is `name.dataset` (or `name`, meaning the model's default dataset). Files are looked up
next to the manifest (the package's `zoo/weights/`), then in `$ZOO_HOME/weights`
(default `~/.cache/zoo/weights`), then downloaded from the entry's URL (or `$ZOO_WEIGHTS_URL/<file>`)
with the sha256 checked before the file is moved into place. `$ZOO_MANIFEST` points at another
manifest (used by tests and private model stores).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import ZooError, suggest
from .io import atomic_write, check_tag, contained, download, sha256_file, zoo_home

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"
MANIFEST_FORMAT = 1


def manifest_path() -> Path:
    return Path(os.environ.get("ZOO_MANIFEST", PACKAGE_WEIGHTS / "manifest.json"))


def read_manifest(path: Path | None = None) -> dict[str, dict[str, Any]]:
    path = path or manifest_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ZooError(f"weights manifest {path} is not valid JSON: {e}") from None
    if data.get("format") != MANIFEST_FORMAT:
        raise ZooError(f"weights manifest {path} has format {data.get('format')!r}, expected {MANIFEST_FORMAT}")
    return data["weights"]


def list_pretrained(pattern: str | None = None) -> list[str]:
    import fnmatch

    return sorted(t for t in read_manifest() if pattern is None or fnmatch.fnmatch(t, pattern))


def resolve_tag(tag: str) -> str:
    from .registry import default_dataset, list_models

    name, _, dataset = tag.partition(".")
    if name not in list_models():
        default_dataset(name)  # raises the unknown-model error with suggestions
    full = f"{name}.{dataset or default_dataset(name)}"
    if not dataset:  # a bare name picks a dataset: say which, so nobody evaluates MNIST weights thinking of CIFAR
        others = sorted(t for t in read_manifest() if t.startswith(f"{name}.") and t != full)
        warnings.warn(f"{name!r} means {full!r} (the model's default dataset"
                      + (f"; also trained: {', '.join(others)}" if others else "") + "); pass the full tag to choose",
                      UserWarning, stacklevel=3)
    entries = read_manifest()
    if full not in entries:
        raise ZooError(f"no trained weights for {full!r}; {suggest(full, entries, 'available weights')}")
    return full


def weights_file(tag: str) -> tuple[Path, dict[str, Any]]:
    """Local path of the (hash-verified) weights file for a full tag, downloading it if needed."""
    entry = read_manifest()[tag]
    # The manifest is data (a $ZOO_MANIFEST may come from anyone): its `file` names a file inside each store.
    what = f"manifest entry {tag}: file"
    local = [contained(manifest_path().parent, entry["file"], what=what),
             contained(zoo_home() / "weights", entry["file"], what=what)]
    path = next((p for p in local if p.exists()), None)
    if path is None:
        base = os.environ.get("ZOO_WEIGHTS_URL")
        url = entry.get("url") or (f"{base.rstrip('/')}/{entry['file']}" if base else None)
        if not url:
            raise ZooError(
                f"weights file {entry['file']} for {tag} is not installed and the manifest has no URL "
                f"(looked in {local[0].parent} and {local[1].parent}; set ZOO_WEIGHTS_URL to a mirror)"
            )
        path = local[1]
        # The manifest declares the size: a server sending more is cut off just past it (the sha256 check would
        # refuse such a file anyway; the cap stops an endless body before it fills the disk).
        size = entry.get("size")
        download(url, path, entry["sha256"], what="weights",
                 max_bytes=size + (1 << 20) if isinstance(size, int) and size > 0 else 4 << 30)
    got = sha256_file(path)
    if got != entry["sha256"]:
        raise ZooError(
            f"weights file {path} has sha256 {got} but the manifest expects {entry['sha256']}; "
            "the file is corrupt or was replaced; delete it and retry"
        )
    return path, entry


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def load(tag_or_path: str | os.PathLike) -> nn.Module:
    """A model in eval mode with trained weights and `model.zoo_meta` (classes, mean/std, metrics, ...).

    Accepts a registry tag (`lenet5_bn`, `lenet5_bn.mnist`) or the path of a `.safetensors` file
    written by `zoo train` (its metadata travels inside the file).
    """
    from .registry import create_model

    p = Path(tag_or_path)
    if p.suffix == ".safetensors":
        if not p.exists():
            raise ZooError(f"weights file {p} does not exist")
        meta = read_embedded_meta(p)
        path = p
    elif p.is_file():
        raise ZooError(f"{p} is not a zoo weights file (.safetensors); exported models (.onnx, .pt) load with "
                       "zoo.load_exported")
    elif p.suffix in (".pt", ".pth", ".onnx") or any(s in str(tag_or_path) for s in ("/", os.sep)):
        # A tag never holds a path separator or a file suffix: this was meant as a file, so say that it is missing
        raise ZooError(f"{p}: no such file (zoo.load takes a registry tag or a .safetensors file)")
    else:
        tag = resolve_tag(str(tag_or_path))
        path, meta = weights_file(tag)
    c, h, _ = meta["input_size"]
    model = create_model(
        meta["model"], num_classes=len(meta["classes"]), in_chans=c, img_size=h, **meta.get("config_overrides", {})
    )
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_state_dict(path).items()}
    model.load_state_dict(state)
    model.zoo_meta = dict(meta)
    return model.eval()


def read_embedded_meta(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

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
    if "tag" in meta:  # it becomes file and folder names (exports, reports, publish): the registry grammar only
        check_tag(meta["tag"], what=f"{path}: embedded tag")
    return meta


def save_weights(model: nn.Module, path: Path, meta: dict[str, Any], *, fp16: bool = False) -> dict[str, Any]:
    """Write model weights + metadata atomically; returns meta completed with file, size and sha256."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if fp16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(meta, dtype="float16" if fp16 else "float32")
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"zoo": json.dumps(meta)}))
    return dict(meta, file=path.name, size=path.stat().st_size, sha256=sha256_file(path))


def publish(path: Path, manifest: Path | None = None, *, tag: str | None = None, url: str | None = None,
            force: bool = False) -> str:
    """Copy a trained weights file next to the manifest and add/replace its entry.

    Every committed weights file stays in git history, so an entry is replaced only by weights that measure better
    on the test split (or with force=True): a worse or unmeasured file is refused before anything is written.
    Publishing the shipped file itself keeps its entry and only records `url`.
    """
    manifest = manifest or manifest_path()
    meta = read_embedded_meta(path)
    tag = check_tag(tag or meta.get("tag") or f"{meta.get('model')}.{meta.get('dataset')}",
                    what="--tag" if tag else f"{path}: embedded tag")
    dest = contained(manifest.parent, f"{tag}.safetensors", what="publish tag")
    entries = read_manifest(manifest) if manifest.exists() else {}
    new_top1 = (meta.get("metrics") or {}).get("top1")
    old_top1 = (entries.get(tag, {}).get("metrics") or {}).get("top1")
    digest = sha256_file(path)
    if tag in entries and entries[tag].get("sha256") == digest:
        # The shipped file itself: keep its entry (its metrics may have been re-measured since), record a new URL.
        entries[tag] = dict(entries[tag], url=url if url is not None else entries[tag].get("url", ""))
    elif not force and new_top1 is None:
        raise ZooError(f"{path} has no measured test metrics (its run did not evaluate on the test split); "
                       "evaluate before publishing, or pass --force")
    elif not force and old_top1 is not None and new_top1 <= old_top1:
        raise ZooError(f"{path}: test top-1 {new_top1:.2%} does not beat the shipped {tag} ({old_top1:.2%}); "
                       "weights are re-committed only when they get better (--force to replace anyway)")
    else:
        if path.resolve() != dest.resolve():
            atomic_write(dest, lambda tmp: shutil.copyfile(path, tmp))  # never a half-written weights file
        entries[tag] = dict(meta, file=dest.name, size=dest.stat().st_size, sha256=digest, url=url or "")
    text = json.dumps({"format": MANIFEST_FORMAT, "weights": dict(sorted(entries.items()))}, indent=1) + "\n"
    atomic_write(manifest, lambda tmp: tmp.write_text(text))
    return tag
