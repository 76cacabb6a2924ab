"""Reports: JSON, Markdown and a self-contained HTML page (PNG figures inlined as data URIs)."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from .data import Loader, open_split, sample_indices
from .errors import ZooError
from .io import contained, disk_error


def _plt():  # matplotlib: heavy, and only reports and plots need it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def read_run_log(path: Path) -> list[dict]:
    """A run's log.jsonl: one JSON object per epoch with `epoch` and train (and val) loss/accuracy. A missing file or
    a line that is no such row is one ZooError naming the file and line (it used to be skipped silently, or a
    JSONDecodeError / KeyError traceback)."""
    try:
        text = path.read_text() if path.is_file() else None
    except (OSError, UnicodeDecodeError) as e:
        raise ZooError(f"run log {path}: unreadable ({e})") from None
    if text is None:
        raise ZooError(f"run log {path} is not a file")
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ZooError(f"run log {path}, line {i}: not JSON ({e}); expected a log.jsonl from zoo train") from None
        keys = ("epoch", "train_loss", "train_acc")
        if not isinstance(row, dict) or not all(isinstance(row.get(k), int | float) and not isinstance(row.get(k), bool)
                                                for k in keys):
            raise ZooError(f"run log {path}, line {i}: not an epoch row with {', '.join(keys)}; expected a log.jsonl "
                           "from zoo train")
        rows.append(row)
    return rows


def plot_curves(history: list[dict] | dict[str, list[dict]], path: Path | None = None, title: str = "") -> bytes:
    """Loss and accuracy per epoch; a dict of histories overlays several runs."""
    plt = _plt()
    runs = history if isinstance(history, dict) else {"": history}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (label, h) in enumerate(runs.items()):
        ep, color = [r["epoch"] for r in h], f"C{i % 10}"  # one colour per run: train solid, val dashed
        for ax, key in ((a1, "loss"), (a2, "acc")):
            ax.plot(ep, [r[f"train_{key}"] for r in h], color=color, label=f"{label} train".strip())
            if h and f"val_{key}" in h[0]:
                ax.plot(ep, [r[f"val_{key}"] for r in h], "--", color=color, label=f"{label} val".strip())
    a1.set(xlabel="epoch", ylabel="loss", title="loss")
    a2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(title)
    png = _png(fig)
    if path:
        Path(path).write_bytes(png)
    return png


def plot_confusion(cm: np.ndarray, classes: list[str], normalise: bool) -> bytes:
    plt = _plt()
    cm = np.asarray(cm, dtype=np.float64)
    show = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalise else cm
    n = len(classes)
    size = min(14, 3 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(show, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if n <= 20:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        for i in range(n):
            for j in range(n):
                v = f"{show[i, j]:.2f}" if normalise else f"{int(show[i, j])}"
                ax.text(j, i, v, ha="center", va="center", fontsize=6,
                        color="white" if show[i, j] > show.max() / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix" + (" (row-normalised)" if normalise else ""))
    return _png(fig)


def plot_per_class(acc: list[float], classes: list[str]) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(classes)), 3.5))
    ax.bar(range(len(acc)), np.asarray(acc) * 100)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set(ylabel="accuracy %", title="per-class accuracy", ylim=(0, 100))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_gallery(images: np.ndarray, items: list[dict], classes: list[str], k: int = 24) -> bytes:
    plt = _plt()
    items = items[:k]
    cols = 8
    rows = max(1, -(-len(items) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.5, rows * 1.8))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, it in zip(np.ravel(axes), items):
        img = images[it["index"]]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        ax.set_title(f"{classes[it['true']][:9]}→{classes[it['pred']][:9]}\n{it['confidence']:.2f}", fontsize=7)
    fig.suptitle("misclassified (true→predicted, confidence)")
    return _png(fig)


def features_and_activations(model, images_nchw):
    """Penultimate features for t-SNE, and each conv layer's activation maps for the first image."""
    acts = {}

    def keep(name):
        def hook(module, inputs, output):  # returns None: the forward pass is unchanged
            acts[name] = output[0].detach().float().cpu()

        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(images_nchw[:1])
    finally:
        for h in hooks:
            h.remove()
    with torch.inference_mode():
        feats = torch.cat([model.forward_features(images_nchw[i : i + 256]).float().cpu()
                           for i in range(0, len(images_nchw), 256)])
    return feats.numpy(), acts


def plot_tsne(feats: np.ndarray, labels: np.ndarray, classes: list[str]) -> bytes:
    from sklearn.manifold import TSNE

    plt = _plt()
    emb = TSNE(n_components=2, init="pca", perplexity=30, random_state=0).fit_transform(feats)
    fig, ax = plt.subplots(figsize=(6, 6))
    sc = ax.scatter(emb[:, 0], emb[:, 1], c=labels, cmap="tab10" if len(classes) <= 10 else "nipy_spectral", s=4,
                    vmin=0, vmax=len(classes) - 1)
    if len(classes) <= 10:  # one legend entry per class present in the sample
        ax.legend(sc.legend_elements(num=None)[0], [classes[i] for i in np.unique(labels)], fontsize=7, loc="best")
    ax.set(title="t-SNE of penultimate-layer features", xticks=[], yticks=[])
    return _png(fig)


def plot_activations(acts: dict, max_maps: int = 8) -> bytes:
    plt = _plt()
    names = list(acts)
    fig, axes = plt.subplots(len(names), max_maps, figsize=(max_maps * 1.2, len(names) * 1.3), squeeze=False)
    for r, n in enumerate(names):
        a = acts[n]
        for c in range(max_maps):
            ax = axes[r, c]
            ax.axis("off")
            if c < a.shape[0]:
                ax.imshow(a[c].numpy(), cmap="viridis")
        axes[r, 0].set_title(n, fontsize=7, loc="left")
    fig.suptitle("activation maps (first channels of each conv) for one test image")
    return _png(fig)


def _img(png: bytes, alt: str) -> str:
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">' \
           f"<figcaption>{html.escape(alt)}</figcaption></figure>"


def _table(rows: list[dict]) -> tuple[str, str]:
    """(markdown, html) of a list of same-keyed dicts."""
    if not rows:
        return "", ""
    keys = list(rows[0])

    def fmt(v):
        if isinstance(v, float):  # tiny differences (|Δlogit| ~ 1e-6) must not print as 0.0000
            return f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.4f}"
        return str(v)

    md = "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n"
    md += "".join("| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |\n" for r in rows)
    th = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    tr = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(r.get(k, '')))}</td>" for k in keys) + "</tr>" for r in rows)
    return md, f"<table><tr>{th}</tr>{tr}</table>"


CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;"
       "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}figure{display:inline-block;"
       "margin:0.5em}img{max-width:100%}")


# What the last report wrote into its folder (top-level names): the next report there removes what it no longer writes.
REPORT_FILES = ".report-files.json"


def _previous_names(out_dir: Path) -> set[str]:
    try:
        names = json.loads((out_dir / REPORT_FILES).read_text())
    except (OSError, ValueError):
        return set()
    # Plain names inside the folder only: a damaged list must never make the writer move anything outside it.
    return {n for n in names if isinstance(n, str) and n not in ("", ".", "..") and "/" not in n and os.sep not in n}


def write_report(out_dir: Path, title: str, sections: list[tuple[str, str, str]], data: dict,
                 files: dict[str, bytes] | None = None) -> dict[str, Path]:
    """sections: (heading, markdown, html); files: extra files (e.g. figures/x.png) by relative path.
    Writes report.json, report.md, report.html. Everything is written to a staging folder first and moved into
    place at the end (report.* last), so a failure part-way leaves no half-written report.

    The report replaces the previous one whole: a folder named in `files` (figures/) is the report's alone and is
    swapped as a unit, and whatever the previous report wrote that this one does not (listed in REPORT_FILES) is
    removed, so no figure of an earlier report survives beside this one. Anything else in out_dir (a training run,
    exported models) is left alone."""
    md = f"# {title}\n\n" + "".join(f"## {h}\n\n{m}\n\n" for h, m, _ in sections)
    body = "".join(f"<h2>{html.escape(h)}</h2>{x}" for h, _, x in sections)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")
    payload = {**(files or {}), "report.json": json.dumps(data, indent=1, default=str).encode(),
               "report.md": md.encode(), "report.html": page.encode()}
    names = sorted({Path(rel).parts[0] for rel in payload} | {REPORT_FILES},
                   key=lambda n: n.startswith("report."))  # report.* last: present only once all else is
    out_dir = Path(out_dir)
    if os.path.lexists(out_dir) and not out_dir.is_dir():
        raise ZooError(f"report folder {out_dir} is a file, not a folder; choose another --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    except OSError as e:
        raise disk_error(e, out_dir) from None
    old = None
    try:
        for rel, blob in payload.items():
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            (stage / rel).write_bytes(blob)
        (stage / REPORT_FILES).write_text(json.dumps(names))
        old = Path(tempfile.mkdtemp(prefix=".report-old-", dir=out_dir))
        moved, placed = [], []
        try:
            for n in sorted(set(names) | _previous_names(out_dir)):
                if os.path.lexists(out_dir / n):
                    os.replace(out_dir / n, old / n)
                    moved.append(n)
            for n in names:
                os.replace(stage / n, out_dir / n)
                placed.append(n)
        except BaseException:  # put the previous report back as it was
            for n in placed:
                if (out_dir / n).is_dir() and not (out_dir / n).is_symlink():
                    shutil.rmtree(out_dir / n)
                else:
                    (out_dir / n).unlink(missing_ok=True)
            for n in moved:
                os.replace(old / n, out_dir / n)
            raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return {k: out_dir / f"report.{k}" for k in ("json", "md", "html")}


def default_report_dir(tag: str, source) -> Path:
    """reports/TAG for a registry tag or a model object; an exported or weights file gets a folder of its own
    (reports/TAG-onnx, -torchscript, -safetensors): its numbers are another source's than the shipped model's."""
    kinds = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".safetensors": "safetensors"}
    kind = kinds.get(Path(source).suffix) if isinstance(source, (str, os.PathLike)) else None
    if kind == "onnx" and str(source).endswith(".int8.onnx"):  # the quantized file measures otherwise
        kind = "int8-onnx"
    # The tag may come from an exported file's metadata (data zoo did not write): only a plain folder name under
    # reports/, whatever it says ('..', '/', a leading dot).
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(tag)).lstrip(".") or "model"
    return contained(Path("reports"), name + (f"-{kind}" if kind else ""), what="report folder")


def replaced_note(out_dir: Path, source: dict) -> str | None:
    """A line saying which earlier report in out_dir a report of `source` replaces; None when there is none or it
    came from the same source (a plain refresh)."""
    path = Path(out_dir) / "report.json"
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        old = None
    if old == source:
        return None
    if not isinstance(old, dict):
        return f"note: replaced the earlier report in {out_dir} (it does not record what it evaluated)"
    return (f"note: replaced the report of {old.get('model')} ({', '.join(old.get('backends') or [])}) in {out_dir}; "
            "use --out to keep both")


TTA_NOTE = ("flip-TTA top1: top-1 of each image's logits averaged with its horizontal mirror's (test-time "
            "augmentation); top1 and every other figure are single-view.")


def eval_report(results, out_dir: Path, *, model=None, run_log: Path | None = None, comparison: dict | None = None,
                tsne_samples: int = 1000, source: dict | None = None) -> dict[str, Path]:
    """The evaluation report for one model: metrics, confusion matrices, per-class bars, gallery, curves,
    t-SNE and activation maps (the last two need the torch model). source: what was evaluated, recorded in
    report.json (default: the model's name and the backends)."""
    r = results[0]
    classes = r.classes
    split = open_split(r.dataset, r.split, labels=r.labels)
    rows = [{"class": c, "accuracy": a, "precision": p, "recall": rc, "f1": f, "support": s}
            for c, a, p, rc, f, s in zip(classes, r.per_class_accuracy, r.precision, r.recall, r.f1, r.support)]
    tta = any(x.top1_flip_tta is not None for x in results)
    summary = [{"backend": x.backend, "device": x.device, "top1": x.top1,
                **({"flip-TTA top1": x.top1_flip_tta if x.top1_flip_tta is not None else ""} if tta else {}),
                "top5": x.top5 if x.top5 is not None else "",
                "loss": x.loss, "macro_f1": x.macro["f1"], "weighted_f1": x.weighted["f1"],
                "img_per_s": x.throughput["images_per_s"], "p50_ms": x.throughput["latency_p50_ms"],
                "p95_ms": x.throughput["latency_p95_ms"]} for x in results]
    sections = []
    problems = [f"{x.backend}: {p}" for x in results for p in x.problems]
    if problems:  # first, above any number: these figures are not to be trusted
        sections.append(("Warnings", "".join(f"- **WARNING**: {p}\n" for p in problems),
                         "<ul>" + "".join(f"<li><b>WARNING</b>: {html.escape(p)}</li>" for p in problems) + "</ul>"))
    md_sum, html_sum = _table(summary)
    if tta:
        md_sum, html_sum = md_sum + f"\n{TTA_NOTE}\n", html_sum + f"<p>{html.escape(TTA_NOTE)}</p>"
    sections.append(("Summary", md_sum, html_sum))
    if comparison:
        sections.append(("Backend comparison", *_table(comparison["rows"])))
    sections.append(("Per-class metrics", *_table(rows)))
    figs = [("confusion matrix (counts)", plot_confusion(np.array(r.confusion), classes, False)),
            ("confusion matrix (row-normalised)", plot_confusion(np.array(r.confusion), classes, True)),
            ("per-class accuracy", plot_per_class(r.per_class_accuracy, classes))]
    if r.misclassified:
        figs.append(("misclassified examples", plot_gallery(split.images, r.misclassified, classes)))
    if run_log:
        hist = read_run_log(Path(run_log))
        if hist:
            figs.append(("training curves", plot_curves(hist)))
    if model is not None and hasattr(model, "forward_features"):
        idx = sample_indices(len(split), tsne_samples)
        x = torch.cat([b.clone() for b, _ in Loader(split, 512, augment=None, shuffle=False, indices=idx)])
        model = model.cpu().eval()
        feats, acts = features_and_activations(model, x)
        figs.append(("t-SNE of penultimate features", plot_tsne(feats, split.labels[idx], classes)))
        if acts:
            figs.append(("activation maps", plot_activations(acts)))
    md_figs, html_figs, files = "", "", {}
    for i, (name, png) in enumerate(figs):
        fn = f"{i:02d}_{name.split(' (')[0].replace(' ', '_').replace('-', '_')}.png"
        files[f"figures/{fn}"] = png
        md_figs += f"![{name}](figures/{fn})\n\n"
        html_figs += _img(png, name)
    sections.append(("Figures", md_figs, html_figs))
    source = source or {"model": r.model, "backends": [x.backend for x in results]}
    data = {"source": source, "results": [x.to_dict() for x in results], "comparison": comparison}
    return write_report(out_dir, f"{r.model} on {r.dataset}/{r.split}", sections, data, files)
