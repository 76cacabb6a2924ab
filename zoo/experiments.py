"""Variant experiments: train a family's variants with the one engine and write ONE comparison report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ZooError, suggest

# (label, model, recipe, recipe overrides)
EXPERIMENTS: dict[str, list[tuple[str, str, str, dict]]] = {
    "lenet5": [
        ("base (Adam 1e-3)", "lenet5", "adam", {}),
        ("lr 0.01", "lenet5", "adam_lr1e-2", {}),
        ("SGD momentum", "lenet5", "sgd", {}),
        ("BatchNorm", "lenet5_bn", "adam", {}),
        ("L2 5e-4", "lenet5", "l2_5e-4", {}),
        ("dropout 0.2", "lenet5", "dropout", {}),
    ],
    "resnet": [
        ("base (Adam 1e-3)", "resnet18", "resnet_base", {}),
        ("lower lr (1e-4)", "resnet18", "resnet_low_lr", {}),
        ("SGD nesterov cosine", "resnet18", "resnet_sgd", {}),
    ],
    "mlp": [
        ("mlp4", "mlp4", "adam", {}),
        ("mlp4 + dropout 0.2", "mlp4", "dropout", {}),
    ],
}
EXPERIMENTS["lenet"] = EXPERIMENTS["lenet5"]


def run_experiment(family: str, dataset: str, *, epochs: int | None = None, out_dir: Path | None = None,
                   device: str | None = None, seed: int = 0, progress: bool = True, **overrides) -> dict[str, Path]:
    from .engine import train
    from .report import _img, _table, plot_confusion, plot_curves, write_report

    if family not in EXPERIMENTS:
        raise ZooError(f"unknown experiment family {family!r}; {suggest(family, EXPERIMENTS)}")
    out = Path(out_dir or Path("reports") / f"experiment-{family}-{dataset}")
    rows, curves, per_class, cms = [], {}, {}, []
    for label, model, recipe, over in EXPERIMENTS[family]:
        slug = "".join(ch if ch.isalnum() else "_" for ch in label).strip("_")
        # The runs are the report's own working files: a re-run of the experiment retrains and replaces them
        # (the engine prints a note for each), as it replaces the report.
        res = train(model, dataset, recipe, epochs=epochs, out_dir=out / "runs" / slug, device=device, seed=seed,
                    progress=progress, overwrite=True, **over, **overrides)
        t = res.test
        rows.append({"variant": label, "model": model, "recipe": recipe, "epochs": len(res.history),
                     "test_top1": t.top1, "macro_f1": t.macro["f1"], "test_loss": t.loss,
                     "best_val_acc": max((h.get("val_acc", 0) for h in res.history), default=0.0),
                     "train_seconds": round(res.train_seconds, 1)})
        curves[label] = res.history
        per_class[label] = t.per_class_accuracy
        cms.append((label, plot_confusion(np.array(t.confusion), t.classes, True)))
        classes = t.classes
    pc_rows = [{"class": c, **{lab: acc[i] for lab, acc in per_class.items()}} for i, c in enumerate(classes)]
    curve_png = plot_curves(curves, title=f"{family} variants on {dataset}")
    sections = [("Accuracy", *_table(rows)),
                ("Training curves", "![curves](curves.png)", _img(curve_png, "overlaid training curves")),
                ("Per-class accuracy", *_table(pc_rows)),
                ("Confusion matrices (row-normalised)", "", "".join(_img(p, lab) for lab, p in cms))]
    return write_report(out, f"{family} variants on {dataset}", sections, {"rows": rows, "per_class": per_class,
                                                                           "curves": curves},
                        {"curves.png": curve_png})
