"""Studies as files: a TOML file names a base network and its variants (one change at a time, or a grid), the
dataset (and what stands in for it when it is not ingested), the seeds and reference figures. `python -m zoo study
FILE` validates the whole file before anything trains, runs every (variant, seed) with the one engine in its own
folder (resumable, --jobs K processes, --only to split a study over machines), and writes one report with mean ± std,
a t-based 95% confidence interval per variant and a significance test of each variant against the base.

Layout of a study folder (default reports/study-NAME):
    runs/<variant-slug>/seed<k>/   the engine's run folder (checkpoint.pt, log.jsonl, model.safetensors, ...)
        study-run.json             written last, atomically: the run is finished (metrics, curves, fingerprint)
        test_predictions.npy       predicted class of every test image (for McNemar when a variant has one seed)
    runs/<variant-slug>/seed<k>.lock   flock'ed while a process trains that run: two never take the same one
    report.html / report.md / report.json, figures/
"""

from __future__ import annotations

import argparse
import ast
import fcntl
import hashlib
import html
import itertools
import json
import math
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Loader, open_split, sample_indices
from .data.cache import split_dir
from .data.specs import DATASETS
from .engine import train
from .errors import ZooError, suggest
from .io import atomic_write
from .pretrained import load
from .recipes import Recipe, default_recipe, get_recipe
from .registry import _check_name, create_model
from .report import (
    _img,
    _plt,
    _png,
    _table,
    features_and_activations,
    plot_activations,
    plot_confusion,
    plot_gallery,
    plot_tsne,
    write_report,
)
from .weights import read_manifest

SHIPPED = Path(__file__).resolve().parent / "studies"
RUN_RECORD = "study-run.json"
PREDICTIONS = "test_predictions.npy"


def _recipe_fields() -> set[str]:
    return {f.name for f in fields(Recipe)} - {"model"}  # the model's options are `options` here: `model` is its name


# What a run is made of: a model, a recipe and its overrides, the model's options, and the engine's run arguments.
RUN_KEYS = _recipe_fields() | {"model", "recipe", "options", "init", "train_subset", "train_last", "labels", "dataset"}
VARIANT_KEYS = RUN_KEYS | {"name", "part", "grid", "reference", "tsne", "activations"}
STUDY_KEYS = {"title", "description", "note", "dataset", "seeds", "base", "tsne", "activations", "gallery"}
DATASET_KEYS = {"stand_in", "note", "ingest"}
REFERENCE_KEYS = {"top1", "citation", "dataset", "epochs", "note"}
TOP_KEYS = {"study", "datasets", "defaults", "variant"}


# ---------------------------------------------------------------------------------------------------------------
# Statistics (no scipy needed: a t table for the interval, the exact Student-t CDF for integer df, exact McNemar).

# t_{0.975, df}: the two-sided 95% critical value, for df = 1..30.
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t_critical(df: int) -> float:
    """Two-sided 95% critical value of Student's t with `df` degrees of freedom (scipy's when installed; past df 30
    the table's last entries are close enough to interpolate towards 1.960)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:
        pass
    if df <= 30:
        return T975[df - 1]
    return 1.960 + (2.042 - 1.960) * 30 / df  # ~1/df convergence to the normal's 1.960


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with integer df >= 1: the closed forms of Abramowitz & Stegun 26.7.3/26.7.4
    (a finite series in cos(theta), theta = atan(t / sqrt(df))): exact, no special functions needed."""
    if math.isinf(t):
        return 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:  # odd: A = 2/pi * (theta + sin cos (1 + 2/3 cos^2 + ... + (2*4*..*(df-3))/(1*3*..*(df-2)) cos^(df-3)))
        total, term = 0.0, 1.0
        if df > 1:
            total = 1.0
            for k in range(1, (df - 1) // 2):
                term *= 2 * k / (2 * k + 1) * c2
                total += term
        a = 2 / math.pi * (theta + s * math.cos(theta) * total) if df > 1 else 2 * theta / math.pi
    else:  # even: A = sin (1 + 1/2 cos^2 + (1*3)/(2*4) cos^4 + ... + (1*3*..*(df-3))/(2*4*..*(df-2)) cos^(df-2))
        total, term = 1.0, 1.0
        for k in range(1, df // 2):
            term *= (2 * k - 1) / (2 * k) * c2
            total += term
        a = s * total
    return min(1.0, max(0.0, 1.0 - a))


def summarize(values: list[float]) -> dict[str, Any]:
    """n, mean, sample std (ddof 1) and the t-based 95% confidence interval of the mean (None where n = 1)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    mean = float(x.mean())
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci95": None}
    std = float(x.std(ddof=1))
    half = t_critical(n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def paired_t(a: list[float], b: list[float]) -> dict[str, Any]:
    """Paired t-test of b - a (same seeds, in order): mean difference, t, df and the two-sided p-value. Identical
    differences (std 0) give t = ±inf and p = 0, or p = 1 when they are all 0."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    n = len(d)
    if n < 2:
        raise ValueError("a paired t-test needs at least 2 pairs")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        t = mean / (sd / math.sqrt(n))
    return {"test": "paired t", "n": n, "diff": mean, "t": t, "df": n - 1,
            "p": 1.0 if mean == 0 and sd == 0 else t_two_sided_p(t, n - 1)}


def mcnemar(base_correct: np.ndarray, other_correct: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test on paired test predictions: b = images only the base gets right, c = only the other;
    two-sided p = P(X <= min(b, c)) * 2 for X ~ Binomial(b + c, 1/2), capped at 1 (exact integer arithmetic, so no
    normal approximation at small counts)."""
    base_correct, other_correct = np.asarray(base_correct, bool), np.asarray(other_correct, bool)
    if base_correct.shape != other_correct.shape:
        raise ValueError("McNemar needs predictions on the same test images")
    b = int((base_correct & ~other_correct).sum())
    c = int((~base_correct & other_correct).sum())
    n = b + c
    if n == 0:
        p = 1.0
    else:
        term, tail = 1, 0  # C(n, 0), then C(n, k+1) = C(n, k) (n - k) / (k + 1), exact in integers
        for k in range(min(b, c) + 1):
            tail += term
            term = term * (n - k) // (k + 1)
        p = min(1.0, float(2 * tail / 2**n)) if n < 1000 else min(1.0, math.exp(
            math.log(2) + math.log(tail) - n * math.log(2)))
    return {"test": "McNemar exact", "only_base": b, "only_other": c, "p": p}


# ---------------------------------------------------------------------------------------------------------------
# Parsing and validation.


@dataclass(frozen=True)
class Variant:
    name: str
    slug: str
    model: str
    recipe: str
    overrides: dict  # recipe field overrides, the model's options under "model"
    dataset: str  # as the file names it (a stand-in is chosen at plan time)
    init: str | None = None
    train_subset: int | None = None
    train_last: int | None = None
    labels: str = "fine"
    reference: dict | None = None
    tsne: bool = False
    activations: bool = False
    group: str = ""  # the [[variant]] name a grid expanded from (itself otherwise)
    part: str = ""  # a label shared by several variants (e.g. "resnet"), so --only can name them together

    @property
    def epochs(self) -> int:
        return get_recipe(self.recipe, **self.overrides).epochs


@dataclass
class Study:
    path: Path
    name: str
    title: str
    description: str
    note: str
    seeds: list[int]
    base: str
    variants: list[Variant]
    datasets: dict[str, dict] = field(default_factory=dict)
    gallery: int = 24

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)


def shipped_studies() -> dict[str, Path]:
    """The studies that ship with zoo (zoo/studies/*.toml), by name."""
    return {p.stem: p for p in sorted(SHIPPED.glob("*.toml"))}


def find_study(ref: str | os.PathLike) -> Path:
    """A study file: a path, or the name of a shipped study."""
    p = Path(ref)
    if p.is_file():
        return p
    if str(ref) in shipped_studies():
        return shipped_studies()[str(ref)]
    raise ZooError(f"study {str(ref)!r}: no such file, nor a shipped study; "
                   f"{suggest(str(ref), shipped_studies(), 'shipped studies')}")


def slugify(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
    return slug or "variant"


class _Where:
    """Line numbers for error messages: tomllib gives none for a well-formed file, so keys are found in the text
    (the first `key =` after the table's header line)."""

    def __init__(self, path: Path, text: str):
        self.path, self.lines = path, text.splitlines()
        self.variant_headers = [i for i, ln in enumerate(self.lines) if re.match(r"\s*\[\[\s*variant\s*\]\]", ln)]

    def _table_range(self, table: str, index: int | None) -> tuple[int, int]:
        if table == "variant" and index is not None and index < len(self.variant_headers):
            start = self.variant_headers[index]
        else:
            start = next((i for i, ln in enumerate(self.lines) if re.match(rf"\s*\[\s*{re.escape(table)}\s*\]", ln)),
                         -1)
        # The table runs to the next header of the same depth ([x] or [[x]]); sub-tables ([variant.grid]) belong.
        end = next((i for i in range(start + 1, len(self.lines))
                    if re.match(r"\s*\[", self.lines[i]) and not re.match(rf"\s*\[\s*{re.escape(table)}\.",
                                                                         self.lines[i])), len(self.lines))
        return start, end

    def line(self, key: str, table: str = "", index: int | None = None) -> int | None:
        start, end = self._table_range(table, index) if table else (-1, len(self.lines))
        if not key:  # the table itself: its header
            return start + 1 if start >= 0 else None
        pat = re.compile(rf"(^|[\s{{,]){re.escape(key)}\s*=|^\s*\[\s*{re.escape(table)}\.{re.escape(key)}\s*\]"
                         if table else rf"^\s*{re.escape(key)}\s*=")
        for i in range(max(start, 0), end):
            if pat.search(self.lines[i]):
                return i + 1
        return start + 1 if start >= 0 else None

    def error(self, msg: str, key: str = "", table: str = "", index: int | None = None) -> ZooError:
        line = self.line(key, table, index) if key or table else None
        return ZooError(f"{self.path}{f', line {line}' if line else ''}: {msg}")


def load_study(ref: str | os.PathLike, *, seeds: int | None = None, epochs: int | None = None,
               dataset: str | None = None, first_seed: int = 0, labels: str | None = None,
               set_values: dict | None = None) -> Study:
    """Read, validate and expand a study file (or a shipped study's name). Every problem is one ZooError naming the
    file, the line where it can be found, the variant and the key. seeds / epochs / dataset override the file's
    (dataset replaces the study's own dataset; variants naming another dataset keep it); labels is the default
    label set; set_values ({key: value}, --set KEY=VALUE) replaces a run key in every variant (e.g. batch_size)."""
    path = find_study(ref)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ZooError(f"{path}: cannot read the study file ({e})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # its message carries "(at line L, column C)"
        raise ZooError(f"{path}: not valid TOML: {e}") from None
    w = _Where(path, text)

    def unknown(d: dict, valid: set[str], what: str, table: str = "", index: int | None = None):
        for k in d:
            if k not in valid:
                raise w.error(f"{what}: unknown key {k!r}; {suggest(k, valid, 'valid keys')}", k, table, index)

    unknown(doc, TOP_KEYS, "top level")
    st = doc.get("study", {})
    if not isinstance(st, dict):
        raise w.error("'study' must be a table ([study])", "study")
    unknown(st, STUDY_KEYS, "[study]", "study")
    for key, kind in (("title", str), ("description", str), ("note", str), ("dataset", str), ("base", str)):
        if key in st and not isinstance(st[key], kind):
            raise w.error(f"[study] {key} must be a string, got {st[key]!r}", key, "study")
    n_seeds = st.get("seeds", 1) if seeds is None else seeds
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or not 1 <= n_seeds <= 100:
        raise (w.error(f"[study] seeds must be an integer in 1..100, got {n_seeds!r}", "seeds", "study")
               if seeds is None else ZooError(f"--seeds {n_seeds!r}: must be an integer in 1..100"))
    gallery = st.get("gallery", 24)
    if isinstance(gallery, bool) or not isinstance(gallery, int) or not 0 <= gallery <= 64:
        raise w.error(f"[study] gallery must be an integer in 0..64 (misclassified images per variant), got "
                      f"{gallery!r}", "gallery", "study")
    for key in ("tsne", "activations"):
        if key in st and not isinstance(st[key], bool):
            raise w.error(f"[study] {key} must be true or false, got {st[key]!r}", key, "study")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ZooError(f"--epochs {epochs!r}: must be an integer >= 1")
    study_dataset = dataset or st.get("dataset")

    datasets = doc.get("datasets", {})
    if not isinstance(datasets, dict) or not all(isinstance(v, dict) for v in datasets.values()):
        raise w.error("'datasets' must hold one table per dataset ([datasets.NAME])", "datasets")
    for name, d in datasets.items():
        unknown(d, DATASET_KEYS, f"[datasets.{name}]", f"datasets.{name}")
        si = d.get("stand_in", [])
        if not isinstance(si, list) or not all(isinstance(s, str) for s in si):
            raise w.error(f"[datasets.{name}] stand_in must be a list of dataset names, got {si!r}", "stand_in",
                          f"datasets.{name}")
        for key in ("note", "ingest"):
            if key in d and not isinstance(d[key], str):
                raise w.error(f"[datasets.{name}] {key} must be a string", key, f"datasets.{name}")

    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise w.error("'defaults' must be a table ([defaults])", "defaults")
    unknown(defaults, RUN_KEYS, "[defaults]", "defaults")
    if labels is not None:
        defaults = {**defaults, "labels": labels}
    forced = dict(set_values or {})
    for k in forced:
        if k not in RUN_KEYS - {"model", "dataset"}:
            raise ZooError(f"--set {k}=...: unknown key; {suggest(k, RUN_KEYS - {'model', 'dataset'}, 'valid keys')}")
    if epochs is not None:
        forced["epochs"] = epochs
    raw = doc.get("variant", [])
    if not isinstance(raw, list) or not raw or not all(isinstance(v, dict) for v in raw):
        raise w.error("a study needs at least one [[variant]] table (and variants are tables: [[variant]])",
                      "variant")
    variants: list[Variant] = []
    for i, v in enumerate(raw):
        label = f"[[variant]] #{i + 1}" + (f" ({v['name']!r})" if isinstance(v.get("name"), str) else "")
        unknown(v, VARIANT_KEYS, label, "variant", i)
        if not isinstance(v.get("name"), str) or not v["name"].strip():
            raise w.error(f"{label}: every variant needs a name (name = \"...\")", "", "variant", i)
        grid = v.get("grid", {})
        if not isinstance(grid, dict):
            raise w.error(f"{label}: grid must be a table of lists (grid = {{lr = [1e-3, 1e-2]}})", "grid",
                          "variant", i)
        for k, vals in grid.items():
            if k not in RUN_KEYS:
                raise w.error(f"{label}: grid: unknown key {k!r}; {suggest(k, RUN_KEYS, 'valid keys')}", k,
                              "variant", i)
            if not isinstance(vals, list) or not vals:
                raise w.error(f"{label}: grid {k} must be a non-empty list of values, got {vals!r}", k, "variant", i)
            if k in v:
                raise w.error(f"{label}: {k} is both a key and a grid axis; keep one", k, "variant", i)
        combos = [dict(zip(grid, c)) for c in itertools.product(*grid.values())] if grid else [{}]
        for combo in combos:
            name = v["name"] + (" (" + ", ".join(f"{k}={_fmt_value(x)}" for k, x in combo.items()) + ")"
                                if combo else "")
            spec = {**defaults, **{k: x for k, x in v.items() if k not in ("grid",)}, **combo, **forced}
            spec["name"] = name
            try:
                variants.append(_variant(spec, study_dataset, st, v["name"]))
            except _Bad as e:
                if e.key in forced:  # the command line's value (it replaces the file's), not the file
                    flag = "--epochs" if e.key == "epochs" and epochs is not None else f"--set {e.key}"
                    raise ZooError(f"{flag}={forced[e.key]!r} ({path}, variant {name!r}): {e}") from None
                # The line of the key where the file sets it: this variant (or its grid), else [defaults].
                where = ("variant", i) if e.key in v or e.key in grid or e.key not in defaults else ("defaults", None)
                raise w.error(f"{label}{' ' + name if combo else ''}: {e}", e.key, *where) from None
    names = [v.name for v in variants]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise w.error(f"two variants are named {dup!r}; names must be unique")
    slugs = [v.slug for v in variants]
    dup = next((s for s in slugs if slugs.count(s) > 1), None)
    if dup:
        raise w.error(f"two variant names give the same folder name {dup!r}; rename one")
    base = st.get("base", variants[0].name)
    if base not in names:
        raise w.error(f"[study] base {base!r} is not a variant; {suggest(base, names, 'variants')}", "base", "study")
    return Study(path=path, name=path.stem, title=st.get("title", path.stem), description=st.get("description", ""),
                 note=st.get("note", ""), seeds=list(range(first_seed, first_seed + n_seeds)), base=base,
                 variants=variants, datasets=datasets, gallery=gallery)


def parse_set(items: list[str]) -> dict:
    """--set KEY=VALUE items as {key: value}: a Python/TOML-like literal (64, 1e-3, true, "none"), else the bare
    word as a string."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ZooError(f"--set {item!r}: expected KEY=VALUE, e.g. batch_size=64")
        value = {"true": "True", "false": "False"}.get(value.strip(), value.strip())
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


def _fmt_value(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


class _Bad(ZooError):
    """A variant's bad value, with the key it is under (for the line number in the error)."""

    def __init__(self, key: str, msg: str):
        super().__init__(msg)
        self.key = key


def _variant(spec: dict, study_dataset: str | None, st: dict, group: str) -> Variant:
    """One expanded variant, every value checked: recipe fields through Recipe, the model and its options through
    the registry, init / labels / train_subset / train_last here. A bad value is a _Bad naming its key."""
    def check(key: str, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except _Bad:
            raise
        except ZooError as e:
            raise _Bad(key, str(e)) from None

    model = spec.get("model")
    if not isinstance(model, str):
        raise _Bad("model", "model: every variant needs a model (model = \"lenet5\"; python -m zoo list)")
    check("model", _check_name, model)
    recipe = spec.get("recipe") or default_recipe(model)
    if not isinstance(recipe, str):
        raise _Bad("recipe", f"recipe {recipe!r}: expected a recipe name (python -m zoo list --recipes)")
    options = spec.get("options", {})
    if not isinstance(options, dict):
        raise _Bad("options", f"options {options!r}: expected a table of model options, e.g. {{dropout = 0.2}}")
    over = {k: spec[k] for k in _recipe_fields() if k in spec}
    base_rec = check("recipe", get_recipe, recipe)  # an unknown recipe name
    if options:  # merged into the recipe's own model options, as `zoo train --model-opt` does
        over["model"] = {**base_rec.model, **options}
    try:
        rec = get_recipe(recipe, **over)
    except ZooError as e:  # "invalid recipe value(s): lr=-1.0 ...": the first field named is the key
        named = re.findall(r"(\w+)=", str(e))
        raise _Bad(next((k for k in named if k in over), ""), str(e)) from None
    dataset = spec.get("dataset", study_dataset)
    if not isinstance(dataset, str) or not dataset:
        raise _Bad("dataset", "dataset: no dataset (set [study] dataset, the variant's dataset, or pass --dataset)")

    try:
        create_model(model, dataset=dataset if dataset in DATASETS else None, **rec.model)
    except ZooError as e:
        raise _Bad("options", f"options: {e}") from None
    init = spec.get("init")
    if init is not None:
        check("init", _check_init, init)
    for k in ("train_subset", "train_last"):
        val = spec.get(k)
        if val is not None and (isinstance(val, bool) or not isinstance(val, int) or val < 1):
            raise _Bad(k, f"{k} {val!r}: must be an integer >= 1")
    labels = spec.get("labels", "fine")
    if labels not in ("fine", "coarse"):
        raise _Bad("labels", f"labels {labels!r}: must be \"fine\" or \"coarse\"")
    ref = spec.get("reference")
    if ref is not None:
        check("reference", _check_reference, ref)
    figures = {}
    for k in ("tsne", "activations"):
        val = spec.get(k, st.get(k, False))
        if not isinstance(val, bool):
            raise _Bad(k, f"{k} {val!r}: must be true or false")
        figures[k] = val
    part = spec.get("part", "")
    if not isinstance(part, str):
        raise _Bad("part", f"part {part!r}: expected a name (--only PART runs every variant of that part)")
    return Variant(name=spec["name"], slug=slugify(spec["name"]), model=model, recipe=recipe,
                   overrides={k: v for k, v in over.items()} | {"epochs": rec.epochs}, dataset=dataset, init=init,
                   train_subset=spec.get("train_subset"), train_last=spec.get("train_last"), labels=labels,
                   reference=ref, group=group, part=part, **figures)


def _check_reference(ref) -> None:
    if not isinstance(ref, dict):
        raise ZooError("reference: expected a table, e.g. {top1 = 0.507, citation = \"...\"}")
    bad = set(ref) - REFERENCE_KEYS
    if bad:
        k = sorted(bad)[0]
        raise ZooError(f"reference: unknown key {k!r}; {suggest(k, REFERENCE_KEYS, 'valid keys')}")
    top1 = ref.get("top1")
    if isinstance(top1, bool) or not isinstance(top1, int | float) or not 0 <= top1 <= 1:
        raise ZooError(f"reference top1 {top1!r}: a fraction in [0, 1] (0.507 for 50.7%)")
    if not isinstance(ref.get("citation"), str) or not ref["citation"].strip():
        raise ZooError("reference: needs a citation string (where the figure comes from)")


def _check_init(init) -> None:
    if not isinstance(init, str):
        raise ZooError(f"init {init!r}: expected zoo:TAG, torchvision:PATH or xavier")
    kind, _, ref = init.partition(":")
    if init == "xavier":
        return
    if kind == "zoo":
        tags = read_manifest()
        if ref not in tags:
            raise ZooError(f"init {init!r}: no weights {ref!r}; {suggest(ref, tags, 'shipped weights')}")
        return
    if kind == "torchvision":
        if not Path(ref).is_file():
            raise ZooError(f"init {init!r}: file {ref!r} not found (an ImageNet ResNet-18 state dict)")
        return
    raise ZooError(f"init {init!r}: expected zoo:TAG, torchvision:PATH or xavier")


# ---------------------------------------------------------------------------------------------------------------
# Planning: which dataset each variant trains on here, and which (variant, seed) runs are left.


def _ingested(name: str) -> bool:
    try:
        return all((split_dir(name, s) / "meta.json").exists() for s in ("train", "test"))
    except ZooError:
        return False


def resolve_dataset(study: Study, name: str) -> tuple[str, str | None]:
    """(the dataset to train on, None or the note saying it stands in for `name`)."""
    if _ingested(name):
        return name, None
    info = study.datasets.get(name, {})
    for s in info.get("stand_in", []):
        if _ingested(s):
            return s, info.get("note") or f"{name} is not ingested here; {s} stands in for it"
    tried = [name, *info.get("stand_in", [])]
    hint = info.get("ingest") or f"python -m zoo ingest {name} --root DIR (or --download)"
    raise ZooError(f"{study.path}: dataset {name!r} is not ingested"
                   + (f", nor its stand-ins {', '.join(tried[1:])}" if len(tried) > 1 else "") + f"; run: {hint}")


@dataclass(frozen=True)
class Run:
    variant: Variant
    seed: int
    dataset: str  # the dataset trained and tested on (the file's, or its stand-in)
    stand_in: str | None

    def folder(self, out: Path) -> Path:
        return out / "runs" / self.variant.slug / f"seed{self.seed}"

    def fingerprint(self) -> str:
        v = self.variant

        rec = get_recipe(v.recipe, **v.overrides).to_dict()
        blob = json.dumps({"model": v.model, "recipe": rec, "init": v.init, "train_subset": v.train_subset,
                           "train_last": v.train_last, "labels": v.labels, "dataset": self.dataset,
                           "seed": self.seed}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def select(study: Study, only: list[str] | None) -> list[Variant]:
    if not only:
        return list(study.variants)
    chosen = []
    for o in only:
        hits = [v for v in study.variants if o in (v.name, v.slug, v.group, v.part)]
        if not hits:
            raise ZooError(f"--only {o!r}: no such variant in {study.path}; "
                           f"{suggest(o, [v.name for v in study.variants], 'variants')}")
        chosen += [v for v in hits if v not in chosen]
    return [v for v in study.variants if v in chosen]


def plan(study: Study, only: list[str] | None = None) -> list[Run]:
    """Every (variant, seed) run of the study (or of the --only variants), datasets resolved: refused up front when
    a dataset and all its stand-ins are missing."""
    resolved: dict[str, tuple[str, str | None]] = {}
    runs = []
    for v in select(study, only):
        if v.dataset not in resolved:
            resolved[v.dataset] = resolve_dataset(study, v.dataset)
        ds, note = resolved[v.dataset]
        runs += [Run(v, s, ds, note) for s in study.seeds]
    return runs


def read_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return None


def finished(run: Run, out: Path) -> dict | None:
    """The run's record if it finished with the settings it has now; a finished run made with other settings is
    refused (its numbers would be reported as this variant's)."""
    rec = read_record(run.folder(out))
    if rec is None:
        return None
    if rec.get("fingerprint") != run.fingerprint():
        raise ZooError(f"{run.folder(out)} holds a finished run of {run.variant.name!r} seed {run.seed} made with "
                       "other settings (the study file, --epochs or the dataset changed); use another --out, or "
                       "delete that folder to retrain it")
    return rec


# ---------------------------------------------------------------------------------------------------------------
# Running.


class _RunLock:
    """flock on runs/<slug>/seed<k>.lock, held while one process trains that run; released by the OS if the process
    dies, so a killed run is never left "taken"."""

    def __init__(self, path: Path):
        self.path, self.fd = path, None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            return False
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def run_one(run: Run, out: Path, *, device: str | None = None, progress: bool = True) -> str:
    """Train one (variant, seed) into its folder, resuming its checkpoint if a killed run left one. Returns "done"
    (already finished), "busy" (another process holds it) or "trained"."""
    folder = run.folder(out)
    lock = _RunLock(folder.parent / f"seed{run.seed}.lock")
    if finished(run, out):
        return "done"
    if not lock.acquire():
        return "busy"
    try:
        if finished(run, out):  # finished by another process between the check and the lock
            return "done"
        v = run.variant
        # Resume whatever a killed run left (the engine's resume is exact at epoch boundaries); a folder with no
        # checkpoint yet starts afresh.
        resume = (folder / "checkpoint.pt").exists() or (folder / "result.json").exists()
        over = dict(v.overrides)
        epochs = over.pop("epochs")
        res = train(v.model, run.dataset, v.recipe, epochs=epochs, out_dir=folder, device=device, seed=run.seed,
                    resume=resume, init=v.init, train_last=v.train_last, train_subset=v.train_subset,
                    labels=v.labels, progress=progress, **over)
        t = res.test
        if t is None:
            raise ZooError(f"{folder}: the run has no test evaluation (is the test split ingested?)")
        preds = t.predictions.astype(np.int32)
        atomic_write(folder / PREDICTIONS, lambda tmp: _save_npy(tmp, preds))
        record = {"variant": v.name, "slug": v.slug, "seed": run.seed, "model": v.model, "recipe": v.recipe,
                  "recipe_values": res.model.zoo_meta.get("recipe", {}), "dataset": run.dataset,
                  "dataset_requested": v.dataset, "stand_in": run.stand_in, "labels": v.labels, "init": v.init,
                  "train_subset": v.train_subset, "train_last": v.train_last, "epochs": len(res.history),
                  "top1": t.top1, "top5": t.top5, "loss": t.loss, "macro_f1": t.macro["f1"], "classes": t.classes,
                  "per_class_accuracy": t.per_class_accuracy, "confusion": t.confusion,
                  "misclassified": t.misclassified[:64], "history": res.history,
                  "train_seconds": round(res.train_seconds, 2), "device": res.model.zoo_meta.get("device"),
                  "commit": res.model.zoo_meta.get("commit"), "date": res.model.zoo_meta.get("date"),
                  "fingerprint": run.fingerprint()}
        # Last: its presence is what makes the run finished for a re-run and for the report.
        atomic_write(folder / RUN_RECORD, lambda tmp: tmp.write_text(json.dumps(record, indent=1, default=str)))
        return "trained"
    finally:
        lock.release()


def _save_npy(tmp: Path, arr: np.ndarray) -> None:
    with open(tmp, "wb") as f:  # np.save(path) would append ".npy" to the temp name
        np.save(f, arr)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_study(study: Study, out: Path, *, jobs: int = 1, only: list[str] | None = None, device: str | None = None,
              progress: bool = True, overrides: dict | None = None, echo=print) -> dict[str, Any]:
    """Train every unfinished (variant, seed) of the study (or of `only`), K at a time with jobs=K (separate
    processes, the cores split between them), then write the report when every run of the study is finished.
    Returns {"trained": [...], "skipped": [...], "busy": [...], "report": paths or None}."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ZooError(f"--jobs {jobs!r}: must be an integer >= 1")
    out = Path(out)
    runs = plan(study, only)
    all_runs = runs if not only else plan(study)
    for r in runs:  # a stale finished run is refused before anything trains
        finished(r, out)
    todo = [r for r in runs if not finished(r, out)]
    skipped = [r for r in runs if r not in todo]
    for r in skipped:
        echo(f"skip {r.variant.name} seed {r.seed}: finished ({r.folder(out) / RUN_RECORD})")
    done: dict[str, list] = {"trained": [], "skipped": [(r.variant.name, r.seed) for r in skipped], "busy": []}
    if jobs == 1:
        for r in todo:
            echo(f"train {r.variant.name} seed {r.seed} on {r.dataset} -> {r.folder(out)}")
            status = run_one(r, out, device=device, progress=progress)
            done["busy" if status == "busy" else "trained"].append((r.variant.name, r.seed))
    else:
        _run_parallel(study, out, todo, jobs, device, overrides or {}, done, echo)
    missing = [r for r in all_runs if read_record(r.folder(out)) is None]
    done["report"] = None
    if not missing:
        done["report"] = write_study_report(study, out)
    else:
        echo(f"{len(all_runs) - len(missing)} of {len(all_runs)} runs finished; the report is written when all are "
             f"(or now, over the finished ones: python -m zoo study {study.path} --report)")
    return done


def _run_parallel(study: Study, out: Path, todo: list[Run], jobs: int, device, overrides: dict, done: dict,
                  echo) -> None:
    """K worker processes (python -m zoo.studies _run ...), each on cores // K threads: small models scale poorly
    over threads, so K runs side by side use the cores better than one run on all of them."""
    threads = max(1, _cores() // jobs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               ZOO_STUDY_THREADS=str(threads))
    pending, active, failed = list(todo), [], []
    while pending or active:
        while pending and len(active) < jobs:
            r = pending.pop(0)
            folder = r.folder(out)
            folder.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "zoo.studies", "_run", str(study.path), "--out", str(out), "--variant",
                   r.variant.name, "--seed", str(r.seed), "--overrides", json.dumps(overrides)]
            if device:
                cmd += ["--device", device]
            log = open(folder.parent / f"seed{r.seed}.worker.log", "w")
            echo(f"start {r.variant.name} seed {r.seed} ({threads} threads; log {log.name})")
            active.append((r, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        r, proc, log = active[0]
        for item in active:  # whichever finishes first
            if item[1].poll() is not None:
                r, proc, log = item
                break
        else:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                continue
        active.remove((r, proc, log))
        log.close()
        if proc.returncode == 0:
            done["trained"].append((r.variant.name, r.seed))
        elif proc.returncode == 3:
            done["busy"].append((r.variant.name, r.seed))
        else:
            failed.append(f"{r.variant.name} seed {r.seed} (rc {proc.returncode}, log {log.name})")
        echo(f"end {r.variant.name} seed {r.seed}: rc {proc.returncode}")
    if failed:
        raise ZooError(f"{len(failed)} run(s) failed: {'; '.join(failed)}")


def _worker_main(argv: list[str]) -> int:
    """python -m zoo.studies _run FILE --out DIR --variant NAME --seed S [--overrides JSON] [--device D]: one
    (variant, seed) of a study, for run_study's --jobs. rc 0 trained or already finished, 3 taken, 2 error."""
    p = argparse.ArgumentParser(prog="python -m zoo.studies _run")
    p.add_argument("file")
    p.add_argument("--out", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--overrides", default="{}")
    p.add_argument("--device")
    a = p.parse_args(argv)
    threads = os.environ.get("ZOO_STUDY_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    try:
        study = load_study(a.file, **json.loads(a.overrides))
        run = next((r for r in plan(study, [a.variant]) if r.seed == a.seed and r.variant.name == a.variant), None)
        if run is None:
            raise ZooError(f"{a.file}: no run {a.variant!r} seed {a.seed}")
        status = run_one(run, Path(a.out), device=a.device, progress=False)
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.variant} seed {a.seed}: {status}")
    return 3 if status == "busy" else 0


# ---------------------------------------------------------------------------------------------------------------
# The report.


def collect(study: Study, out: Path, merge: list[Path] = ()) -> tuple[dict[tuple[str, int], dict], list[Run]]:
    """{(variant, seed): record} of every planned run finished in `out` or in one of the `merge` folders (study
    folders from other machines), and the runs finished nowhere."""
    records, missing = {}, []
    for r in plan(study):
        for folder in (out, *merge):
            rec = read_record(r.folder(Path(folder)))
            if rec is not None:
                if rec.get("fingerprint") != r.fingerprint():
                    raise ZooError(f"{r.folder(Path(folder))}: a finished run of {r.variant.name!r} seed {r.seed} "
                                   "made with other settings than the study file's (or --epochs / --seeds); refused")
                records[(r.variant.name, r.seed)] = {**rec, "_folder": str(r.folder(Path(folder)))}
                break
        else:
            missing.append(r)
    return records, missing


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x * 100:.{digits}f}"


def compare_to_base(study: Study, records: dict, variant: Variant) -> dict[str, Any] | None:
    """The variant against the base: a paired t-test over the seeds both have finished (≥ 2), else McNemar on the
    test predictions of the first common seed. None for the base itself; {"test": "n/a", ...} when they were tested
    on different test sets."""
    base = study.variant(study.base)
    if variant.name == base.name:
        return None
    seeds = [s for s in study.seeds if (base.name, s) in records and (variant.name, s) in records]
    if not seeds:
        return {"test": "n/a", "why": "no seed finished for both"}
    b0, v0 = records[(base.name, seeds[0])], records[(variant.name, seeds[0])]
    if (b0["dataset"], b0["labels"]) != (v0["dataset"], v0["labels"]):
        return {"test": "n/a", "why": f"other test set ({v0['dataset']} vs the base's {b0['dataset']})"}
    if len(seeds) >= 2:
        return paired_t([records[(base.name, s)]["top1"] for s in seeds],
                        [records[(variant.name, s)]["top1"] for s in seeds]) | {"seeds": seeds}

    labels = open_split(b0["dataset"], "test", labels=b0["labels"]).labels
    pb = np.load(Path(b0["_folder"]) / PREDICTIONS)
    pv = np.load(Path(v0["_folder"]) / PREDICTIONS)
    return mcnemar(pb == labels, pv == labels) | {"seeds": seeds[:1],
                                                  "diff": float((pv == labels).mean() - (pb == labels).mean())}


def _reference_cell(ref: dict | None, mean: float) -> str:
    if not ref:
        return ""
    where = ", ".join(str(x) for x in (ref.get("dataset"), f"{ref['epochs']} ep" if ref.get("epochs") else None)
                      if x)
    return f"{ref['top1'] * 100:.1f}%{f' ({where})' if where else ''} vs {mean * 100:.1f}% " \
           f"({(mean - ref['top1']) * 100:+.1f})"


def _plot_seed_band(curves: dict[str, list[list[dict]]], title: str) -> bytes:
    """Per variant: the mean over seeds of train loss and of validation (else train) accuracy per epoch, with the
    band between the lowest and highest seed."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (label, runs) in enumerate(curves.items()):
        color = f"C{i % 10}"
        n_ep = min(len(h) for h in runs)
        if n_ep == 0:
            continue
        ep = np.arange(1, n_ep + 1)
        acc_key = "val_acc" if all("val_acc" in h[0] for h in runs) else "train_acc"
        for ax, key in ((a1, "train_loss"), (a2, acc_key)):
            y = np.array([[h[e][key] for e in range(n_ep)] for h in runs])
            ax.plot(ep, y.mean(0), color=color, label=f"{label} ({len(runs)} seeds)" if ax is a2 else None,
                    marker="o" if n_ep == 1 else None)
            if len(runs) > 1:
                ax.fill_between(ep, y.min(0), y.max(0), color=color, alpha=0.2)
    a1.set(xlabel="epoch", ylabel="train loss", title="train loss (mean; band: min-max over seeds)")
    a2.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy (mean; band: min-max over seeds)")
    from matplotlib.ticker import MaxNLocator

    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: no 1.25
    a2.legend(fontsize=7)
    fig.suptitle(title)
    return _png(fig)


def write_study_report(study: Study, out: Path, merge: list[Path] = (), *, tsne_samples: int = 500
                       ) -> dict[str, Path]:
    """One report over every finished run (of `out` and the `merge` folders): the accuracy table with mean ± std,
    95% CI, the test against the base and the reference column; seed-band curves; per-class accuracy; confusion
    matrices (summed over seeds); a misclassified gallery per variant; t-SNE and activation maps where asked."""
    out = Path(out)
    records, missing = collect(study, out, [Path(m) for m in merge])
    if not records:
        raise ZooError(f"{out}: no finished run of {study.path} to report on (train first: python -m zoo study "
                       f"{study.path})")
    rows, stats, per_class, curves, cms, galleries, extra, refs = [], {}, {}, {}, [], [], [], []
    datasets_used: dict[str, str | None] = {}
    for v in study.variants:
        recs = [records[(v.name, s)] for s in study.seeds if (v.name, s) in records]
        if not recs:
            continue
        first = recs[0]
        datasets_used[first["dataset_requested"]] = first["dataset"] if first.get("stand_in") else None
        s = summarize([r["top1"] for r in recs])
        cmp = compare_to_base(study, records, v)
        stats[v.name] = {"top1": s, "vs_base": cmp, "seeds": [r["seed"] for r in recs],
                         "top1_per_seed": [r["top1"] for r in recs]}
        test = "base" if cmp is None else ("n/a" if cmp["test"] == "n/a" else
                                            f"{cmp['test']}: Δ {cmp['diff'] * 100:+.2f}, p={cmp['p']:.3g}")
        sig = "" if cmp is None or cmp["test"] == "n/a" else ("yes" if cmp["p"] < 0.05 else "no")
        ref = v.reference
        rows.append({"variant": v.name, "model": v.model, "dataset": first["dataset"] + (
            f" (for {first['dataset_requested']})" if first.get("stand_in") else ""), "epochs": first["epochs"],
            "seeds": len(recs), "test top-1 % (mean ± std)": f"{_pct(s['mean'])} ± {_pct(s['std'])}"
            if s["std"] is not None else _pct(s["mean"]),
            "95% CI %": f"[{_pct(s['ci95'][0])}, {_pct(s['ci95'][1])}]" if s["ci95"] else "-",
            "vs base": test, "significant (p<0.05)": sig,
            "reference vs measured": _reference_cell(ref, s["mean"]),
            "train s (mean)": f"{np.mean([r['train_seconds'] for r in recs]):.1f}"})
        if ref:
            refs.append(f"{v.name}: {ref['top1'] * 100:.1f}% — {ref['citation']}"
                        + (f" ({ref['note']})" if ref.get("note") else ""))
        per_class[v.name] = (first["classes"], np.mean([r["per_class_accuracy"] for r in recs], axis=0).tolist())
        curves[v.name] = [r["history"] for r in recs]
        cm = np.sum([np.array(r["confusion"]) for r in recs], axis=0)
        cms.append((f"{v.name} ({len(recs)} seeds summed)", plot_confusion(cm, first["classes"], True)))
        if study.gallery and first["misclassified"]:
            split = open_split(first["dataset"], "test", labels=first["labels"])
            galleries.append((f"{v.name}, seed {first['seed']}", plot_gallery(split.images, first["misclassified"],
                                                                               first["classes"], study.gallery)))
        if v.tsne or v.activations:
            extra += _model_figures(first, v, tsne_samples)
    # Per-class accuracy: one table per class list (variants on another dataset get their own).
    pc_sections = []
    groups: dict[tuple, list[str]] = {}
    for name, (classes, _) in per_class.items():
        groups.setdefault(tuple(classes), []).append(name)
    for classes, names in groups.items():
        pc_rows = [{"class": c, **{n: f"{per_class[n][1][i] * 100:.1f}" for n in names}}
                   for i, c in enumerate(classes)]
        pc_sections.append(_table(pc_rows))
    files: dict[str, bytes] = {}

    def fig(name: str, png: bytes) -> tuple[str, str]:
        fn = f"figures/{len(files):02d}_{slugify(name)[:60]}.png"
        files[fn] = png
        return f"![{name}]({fn})\n\n", _img(png, name)

    curve_md, curve_html = fig("training curves", _plot_seed_band(curves, study.title))
    intro = [study.description, study.note]
    epochs = sorted({r["epochs"] for r in records.values()})
    devices = sorted({str(r.get("device")) for r in records.values()})
    intro.append(f"Runs: {len(records)} finished ((variant, seed) pairs), seeds {study.seeds[0]}.."
                 f"{study.seeds[-1]}, {', '.join(map(str, epochs))} epoch(s) per run, on {', '.join(devices)}.")
    for req, used in datasets_used.items():
        if used:
            note = study.datasets.get(req, {}).get("note") or f"{used} stands in for {req}"
            intro.append(f"Data: {req} is not ingested here; **{used}** stands in for it: {note}")
    for ds in sorted({r["dataset"] for r in records.values()}):
        intro.append(_data_line(ds))
    stats_note = ("Test top-1 over seeds: mean ± sample std (n-1); 95% CI = mean ± t(0.975, n-1)·std/√n. "
                  "\"vs base\": a paired t-test over the seeds both variants finished (two-sided), or with one seed "
                  "an exact McNemar test on the test predictions; p < 0.05 is marked significant, with no "
                  "correction for the number of comparisons.")
    md_rows, html_rows = _table(rows)
    ref_md = "".join(f"- {r}\n" for r in refs)
    ref_html = "<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in refs) + "</ul>" if refs else ""
    sections = [("Study", "".join(f"{x}\n\n" for x in intro if x),
                 "".join(f"<p>{html.escape(x).replace('**', '')}</p>" for x in intro if x)),
                ("Accuracy", md_rows + f"\n{stats_note}\n\n" + (f"References:\n\n{ref_md}" if refs else ""),
                 html_rows + f"<p>{html.escape(stats_note)}</p>" + (f"<p>References:</p>{ref_html}" if refs else ""))]
    if missing:
        miss = [f"{r.variant.name} seed {r.seed}" for r in missing]
        sections.append(("Not finished", "".join(f"- {m}\n" for m in miss),
                         "<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in miss) + "</ul>"))
    sections.append(("Training curves", curve_md, curve_html))
    sections.append(("Per-class accuracy % (mean over seeds)", "\n".join(m for m, _ in pc_sections),
                     "".join(h for _, h in pc_sections)))
    for title, figs in (("Confusion matrices (row-normalised)", cms), ("Misclassified test images", galleries),
                        ("t-SNE and activation maps", extra)):
        if figs:
            parts = [fig(name, png) for name, png in figs]
            sections.append((title, "".join(m for m, _ in parts), "".join(h for _, h in parts)))
    shipped = study.path.resolve().parent == SHIPPED  # recorded as zoo/studies/X.toml, not this machine's path
    data = {"study": f"zoo/studies/{study.path.name}" if shipped else str(study.path), "title": study.title, "seeds": study.seeds, "base": study.base,
            "rows": rows, "stats": stats, "references": {v.name: v.reference for v in study.variants if v.reference},
            "per_class": {n: {"classes": c, "accuracy": a} for n, (c, a) in per_class.items()},
            "datasets": {req: used or req for req, used in datasets_used.items()},
            "runs": [{k: v for k, v in r.items() if k not in ("history", "confusion", "misclassified", "_folder")}
                     for r in records.values()],
            "curves": {n: h for n, h in curves.items()}, "missing": [[r.variant.name, r.seed] for r in missing]}
    return write_report(out, study.title, sections, data, files)


def _data_line(dataset: str) -> str:
    """What the cached dataset is: sizes, the format it was ingested from, and whether that was JPEG (a lossy copy of
    CIFAR scores a few points below the official files) or a partial copy: a figure is only as good as its data."""
    parts = []
    for split in ("train", "test"):
        try:
            parts.append(f"{len(open_split(dataset, split)):,} {split}")
        except ZooError:
            pass
    meta = open_split(dataset, "test").meta
    fmt = meta.get("format", "?")
    root = meta.get("source_root")
    jpeg = bool(root) and fmt == "imagefolder" and Path(root).is_dir() and \
        next(Path(root).glob("test/*/*.[jJ][pP]*[gG]"), None) is not None
    line = f"Data: {dataset}: {' / '.join(parts)} images, ingested from {fmt} files"
    if jpeg:
        line += " (JPEG-encoded images: a lossy re-encoding where the official files are lossless)"
    if meta.get("partial"):
        line += " (a PARTIAL copy)"
    return line + "."


def _model_figures(record: dict, v: Variant, samples: int) -> list[tuple[str, bytes]]:
    """t-SNE of penultimate features and activation maps of one run's model (its first seed) on its test split."""
    model = load(Path(record["_folder"]) / "model.safetensors").cpu().eval()
    if not hasattr(model, "forward_features"):
        return []
    split = open_split(record["dataset"], "test", labels=record["labels"])
    idx = sample_indices(len(split), min(samples, len(split)))
    x = torch.cat([b.clone() for b, _ in Loader(split, 256, augment=None, shuffle=False, indices=idx)])
    feats, acts = features_and_activations(model, x)
    figs = []
    if v.tsne and len(idx) > 30:  # t-SNE needs more points than its perplexity (30)
        figs.append((f"{v.name}: t-SNE of penultimate features", plot_tsne(feats, split.labels[idx],
                                                                             record["classes"])))
    if v.activations and acts:
        figs.append((f"{v.name}: activation maps", plot_activations(acts)))
    return figs


def default_out(study: Study) -> Path:
    return Path("reports") / f"study-{study.name}"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_run":
        sys.exit(_worker_main(sys.argv[2:]))
    print("usage: python -m zoo study FILE (this module's own entry is the --jobs worker: _run)", file=sys.stderr)
    sys.exit(2)
