"""Variant experiments (`python -m zoo experiment FAMILY --dataset D`): each family is a shipped study file,
zoo/studies/experiment_FAMILY.toml, run on the dataset given, one seed by default (--seed picks it, --seeds N
repeats it), into reports/experiment-FAMILY-DATASET. The study engine (zoo.studies) does the training, the
resuming and the one comparison report."""

from __future__ import annotations

from pathlib import Path

from .errors import ZooError, suggest
from .studies import load_study, run_study, write_study_report

# family -> shipped study name ("lenet" is the older spelling of "lenet5")
FAMILIES = {"lenet5": "experiment_lenet5", "lenet": "experiment_lenet5", "resnet": "experiment_resnet",
            "mlp": "experiment_mlp"}


def experiment_study(family: str, dataset: str, *, epochs: int | None = None, seed: int = 0, seeds: int | None = None,
                     labels: str = "fine", set_values: dict | None = None):
    """(the family's Study on `dataset`, the overrides that rebuild it in a --jobs worker)."""
    if family not in FAMILIES:
        raise ZooError(f"unknown experiment family {family!r}; {suggest(family, FAMILIES)} (or a study .toml file)")
    overrides = {"seeds": seeds, "epochs": epochs, "dataset": dataset, "first_seed": seed, "labels": labels,
                 "set_values": set_values or {}}
    return load_study(FAMILIES[family], **overrides), overrides


def run_experiment(family: str, dataset: str, *, epochs: int | None = None, out_dir: Path | None = None,
                   device: str | None = None, seed: int = 0, progress: bool = True, seeds: int | None = None,
                   jobs: int = 1, labels: str = "fine", **overrides) -> dict[str, Path]:
    """Train the family's variants on `dataset` and write one comparison report; returns its files (json, md,
    html). `**overrides` replace recipe fields in every variant (lr=..., batch_size=...). Finished (variant, seed)
    runs in `out_dir` are kept and skipped: the report is rebuilt from them."""
    study, over = experiment_study(family, dataset, epochs=epochs, seed=seed, seeds=seeds, labels=labels,
                                   set_values=overrides)
    out = Path(out_dir or Path("reports") / f"experiment-{family}-{dataset}")
    res = run_study(study, out, jobs=jobs, device=device, progress=progress, overrides=over)
    return res["report"] or write_study_report(study, out)
