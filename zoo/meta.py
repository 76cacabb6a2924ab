"""WeightsMeta: the one schema for what zoo says about a weights file.

The same fields travel in the safetensors header (`zoo` metadata), in each manifest entry, as `model.zoo_meta`,
and (as the preprocessing contract derived from them) in exported ONNX/TorchScript files. It is read from files zoo
may not have written, so `from_dict` checks every field: an unknown or missing field, a wrong type, or a schema
newer than this zoo is one ZooError naming the source and the field.

`WeightsMeta` is also a read-only Mapping (`meta["classes"]`, `meta.get("metrics")`, `dict(meta)`), so code
written against the plain dicts of earlier versions keeps working; zoo's own code reads attributes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ZooError
from .io import check_tag

SCHEMA = 1  # bump when a field changes meaning; from_dict refuses a newer one


@dataclass(frozen=True, eq=True)
class WeightsMeta(Mapping):
    # What the weights are: the tag, the model that loads them and the data they were trained on.
    tag: str
    model: str
    dataset: str
    classes: list[str]
    mean: list[float]  # per-channel, of pixels scaled to [0, 1]
    std: list[float]
    input_size: list[int]  # C, H, W
    labels: str = "fine"  # CIFAR-100: "fine" or "coarse"
    config_overrides: dict[str, Any] = field(default_factory=dict)  # the family config fields the run changed
    # How they were made.
    recipe: dict[str, Any] = field(default_factory=dict)
    epochs_run: int | None = None
    train_seconds: float | None = None
    device: str = ""
    torch: str = ""
    commit: str = ""
    date: str = ""
    bf16: bool | None = None
    channels_last: bool | None = None
    partial_data: list[str] | None = None  # splits cached from a partial copy (ingest --allow-partial)
    note: str = ""  # lineage of a fine-tuned file, in words
    commit_note: str = ""
    # What they measure (zoo.evaluate on the test split of exactly these weights).
    metrics: dict[str, Any] | None = None
    # The INT8 file `python -m export onnx TAG --int8` makes of these weights, as measured: top1_int8, top1_fp32,
    # speedup (INT8 / fp32 ONNX Runtime throughput), batch, machine, date, recommended.
    int8: dict[str, Any] | None = None
    # The file (the manifest fills these; a file's own header cannot hold its own hash).
    dtype: str = "float32"
    file: str = ""
    size: int | None = None
    sha256: str = ""
    url: str = ""
    schema: int = SCHEMA

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # ------------------------------------------------------------------ the Mapping view
    def __getitem__(self, key: str) -> Any:
        # The mapping is the JSON view (to_dict): an optional field left at its default is absent, as it was from
        # the plain dicts this replaces (`"partial_data" in meta` is False for a file trained on a full dataset).
        if key == "num_classes":
            return self.num_classes
        if key not in _FIELDS or (key not in _ALWAYS and getattr(self, key) == _DEFAULTS[key]):
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; optional provenance fields left at their default are left out, so entries stay short
        and a file written before such a field existed reads back equal."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _ALWAYS or v != _DEFAULTS[f.name]:
                out[f.name] = v
        out["num_classes"] = self.num_classes  # for readers of the JSON; derived, so never read back
        return out

    def replace(self, **changes) -> WeightsMeta:
        """A copy with `changes` applied and checked like any other input."""
        return WeightsMeta.from_dict(self.to_dict() | changes, source="WeightsMeta.replace")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str) -> WeightsMeta:
        """Check and convert what a file or manifest says; one ZooError naming `source` and the field otherwise."""
        if isinstance(data, WeightsMeta):
            return data
        if not isinstance(data, Mapping):
            raise ZooError(f"{source}: weights metadata must be a JSON object, found {type(data).__name__}")
        d = dict(data)
        schema = d.get("schema", SCHEMA)
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
            raise ZooError(f"{source}: weights metadata schema {schema!r} is not a positive integer")
        if schema > SCHEMA:
            raise ZooError(f"{source}: weights metadata schema {schema} was written by a newer zoo (this one reads "
                           f"up to {SCHEMA}); upgrade zoo")
        num_classes = d.pop("num_classes", None)
        unknown = sorted(set(d) - set(_FIELDS))
        if unknown:
            raise ZooError(f"{source}: unknown weights metadata field(s) {', '.join(unknown)}")
        missing = sorted(_REQUIRED - set(d))
        if missing:
            raise ZooError(f"{source}: weights metadata lacks {', '.join(missing)}")
        for name, value in d.items():
            check = _CHECKS.get(name)
            if check and not check(value):
                raise ZooError(f"{source}: weights metadata field {name}={_short(value)} is not {_TYPES[name]}")
        check_tag(d["tag"], what=f"{source}: tag")
        c = d["input_size"][0]
        for name in ("mean", "std"):
            if len(d[name]) != c or not all(math.isfinite(v) for v in d[name]):
                raise ZooError(f"{source}: weights metadata field {name} must hold {c} finite values (one per input "
                               f"channel), found {_short(d[name])}")
        if any(v <= 0 for v in d["std"]):
            raise ZooError(f"{source}: weights metadata std {d['std']} must be > 0")
        if num_classes is not None and num_classes != len(d["classes"]):
            raise ZooError(f"{source}: weights metadata says num_classes={_short(num_classes)} but lists "
                           f"{len(d['classes'])} classes")
        for name in ("mean", "std"):
            d[name] = [float(v) for v in d[name]]
        return cls(**d)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_str(v):
    return isinstance(v, str)


def _is_int(v, lo=0):
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _is_num(v):
    return isinstance(v, int | float) and not isinstance(v, bool)


def _opt(check):
    return lambda v: v is None or check(v)


_CHECKS = {
    "tag": _is_str, "model": _is_str, "dataset": _is_str, "labels": _is_str, "device": _is_str, "torch": _is_str,
    "commit": _is_str, "date": _is_str, "note": _is_str, "commit_note": _is_str, "dtype": _is_str, "file": _is_str,
    "sha256": _is_str, "url": _is_str,
    "classes": lambda v: isinstance(v, list) and len(v) >= 1 and all(isinstance(c, str) for c in v),
    "mean": lambda v: isinstance(v, list) and all(_is_num(x) for x in v),
    "std": lambda v: isinstance(v, list) and all(_is_num(x) for x in v),
    "input_size": lambda v: isinstance(v, list) and len(v) == 3 and all(_is_int(x, 1) for x in v),
    "config_overrides": lambda v: isinstance(v, dict), "recipe": lambda v: isinstance(v, dict),
    "metrics": _opt(lambda v: isinstance(v, dict)), "int8": _opt(lambda v: isinstance(v, dict)),
    "epochs_run": _opt(_is_int), "train_seconds": _opt(lambda v: _is_num(v) and v >= 0), "size": _opt(_is_int),
    "bf16": _opt(lambda v: isinstance(v, bool)), "channels_last": _opt(lambda v: isinstance(v, bool)),
    "partial_data": _opt(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "schema": lambda v: _is_int(v, 1),
}
_TYPES = {
    "classes": "a non-empty list of class names", "mean": "a list of numbers", "std": "a list of numbers",
    "input_size": "[channels, height, width] of positive integers", "config_overrides": "an object",
    "recipe": "an object", "metrics": "an object or null", "int8": "an object or null", "epochs_run": "a non-negative integer or null",
    "train_seconds": "a non-negative number or null", "size": "a non-negative integer or null",
    "bf16": "true, false or null", "channels_last": "true, false or null",
    "partial_data": "a list of split names or null", "schema": "a positive integer",
} | {name: "a string" for name in ("tag", "model", "dataset", "labels", "device", "torch", "commit", "date", "note",
                                    "commit_note", "dtype", "file", "sha256", "url")}
_FIELDS = {f.name for f in fields(WeightsMeta)}
_REQUIRED = {f.name for f in fields(WeightsMeta)
             if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
# Written even at their default: what every reader looks for, so an entry says it rather than implies it.
_ALWAYS = _REQUIRED | {"labels", "config_overrides", "recipe", "dtype", "url"}
_DEFAULTS = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
             for f in fields(WeightsMeta) if f.name not in _REQUIRED}
