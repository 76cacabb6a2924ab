"""python -m zoo {info,list,ingest,train,eval,study,experiment,demo,publish,cards,weights}."""

from __future__ import annotations

import argparse
import ast
import fnmatch
import importlib.util
import os
import platform
import sys
import warnings
from dataclasses import fields
from pathlib import Path

import numpy
import torch

from . import __version__, cards
from . import studies as S
from . import weights as W
from .artifacts import to_onnx, to_torchscript
from .data import ingest, native, open_split
from .data.download import download
from .engine import train
from .errors import ZooError, suggest
from .evaluation import AUTO_BACKEND, EVAL_BACKENDS, compare, evaluate
from .experiments import experiment_study
from .pretrained import load
from .recipes import FIELD_HELP, OPTIMIZERS, RECIPES, SCHEDULES, Recipe, default_recipe, get_recipe
from .registry import default_dataset, list_models
from .report import default_report_dir, eval_report, replaced_note
from .runtime import EXPORTED_SUFFIXES, load_exported
from .weights import publish, read_manifest


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="ingested dataset (mnist, cifar10, cifar100, cinic10, stl10, ...)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--labels", default="fine", choices=["fine", "coarse"],
                   help="CIFAR-100: the 100 fine classes (default) or the 20 coarse superclasses")


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    """One flag per Recipe field (--lr, --warmup-epochs, --nesterov/--no-nesterov, ...), each overriding the named
    recipe; generated from the dataclass, so every field is reachable and the names cannot drift."""
    choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES}
    for f in fields(Recipe):
        if f.name in ("epochs", "model"):  # --epochs is shared with `experiment`; model options below
            continue
        flag, default = "--" + f.name.replace("_", "-"), getattr(Recipe(), f.name)
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=FIELD_HELP.get(f.name))
        else:
            p.add_argument(flag, type=type(default), choices=choices.get(f.name), default=None,
                           help=FIELD_HELP.get(f.name))
    p.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="model config override merged into the recipe's, e.g. dropout=0.3 or act=tanh (repeatable)")


def _model_opts(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ZooError(f"--model-opt {item!r}: expected KEY=VALUE, e.g. dropout=0.3")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()  # a bare word: a string option such as act=tanh
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zoo", description="Model zoo of classic small-image CNNs.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="versions, native features, backends and devices").set_defaults(func=cmd_info)
    s = sub.add_parser("list", help="registered models and shipped weights")
    s.set_defaults(func=cmd_list)
    s.add_argument("pattern", nargs="?", help="wildcard, e.g. 'lenet5*'")
    s.add_argument("--markdown", action="store_true", help="the shipped weights as a Markdown table")
    s.add_argument("--recipes", action="store_true", help="the recipe table: each recipe's values")

    s = sub.add_parser("ingest", help="decode a dataset once into the cache")
    s.set_defaults(func=cmd_ingest)
    s.add_argument("dataset", help="mnist, cifar10, cifar100, cinic10, stl10, or a new name for an ImageFolder tree")
    s.add_argument("--root", help="folder with the official files or train/ (valid/) test/ folders; with --download, "
                   "where to put the download (default: $ZOO_HOME/downloads/DATASET)")
    s.add_argument("--download", action="store_true",
                   help="fetch the official files first (mnist, cifar10, cifar100, stl10, cinic10), MD5-checked")
    s.add_argument("--mirror", help="with --download: a base URL to fetch from instead of the official ones "
                   "(same file names and checksums; also $ZOO_DATA_MIRROR)")
    s.add_argument("--splits", help="comma-separated splits (default: all present)")
    s.add_argument("--force", action="store_true", help="rebuild even when the cache is current")
    s.add_argument("--resize", type=int, help="STL-10: resize to this size (e.g. 32)")
    s.add_argument("--classes", help="keep only these comma-separated classes, labels in this order (any format; "
                   "ingest under a new name, e.g. cifar10_5)")
    s.add_argument("--threads", type=int, help="decoder threads (default: all cores)")
    s.add_argument("--allow-partial", action="store_true",
                   help="mnist, cifar10, ... with fewer images than published: cache them marked partial (meta.json, "
                        "and every weights file trained on them) instead of refusing")

    s = sub.add_parser("train", help="train a model with a named recipe")
    s.set_defaults(func=cmd_train)
    s.add_argument("name", help="registered model name")
    _add_train_args(s)
    s.add_argument("--recipe", help="recipe name (default: the family's fast recipe); see `list`")
    _add_recipe_args(s)
    s.add_argument("--out", help="run directory (default: runs/NAME.DATASET)")
    s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a finished run in OUT (model.safetensors, result.json); without it (or --resume) "
                        "such a folder is refused")
    s.add_argument("--init", help="torchvision:PATH (ImageNet ResNet-18 state dict), zoo:TAG, or xavier")
    s.add_argument("--train-last", type=int, help="freeze all but the last K stages")
    s.add_argument("--train-subset", type=int, help="keep N training images per class")
    s.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile (default: on for CUDA, off on CPU)")
    s.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on for CUDA, off on CPU; on CPUs with AVX512-BF16 or AMX, "
                        "with --channels-last, ResNets trained 2.4x faster here; see the README)")
    s.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on for CUDA, off on CPU)")
    s.add_argument("--tensorboard", action="store_true")
    s.add_argument("--fp16-weights", action="store_true", help="store the weights file in fp16")

    s = sub.add_parser("eval", help="evaluate a model and write JSON/Markdown/HTML reports")
    s.set_defaults(func=cmd_eval)
    s.add_argument("model", help="tag (lenet5_bn.cifar10), .safetensors, .onnx or TorchScript .pt file")
    s.add_argument("--dataset", help="dataset (default: the model's own)")
    s.add_argument("--split", default="test")
    s.add_argument("--backend", choices=["torch", "torchscript", "onnxruntime", "auto"],
                   help="default: torch for a tag or .safetensors file; an exported .onnx/.pt file runs on its own "
                        "runtime (onnxruntime/torchscript) only")
    s.add_argument("--compare", help="comma-separated backends to compare, e.g. torch,torchscript,onnxruntime")
    s.add_argument("--device", default="cpu")
    s.add_argument("--batch-size", type=int, default=1024)
    s.add_argument("--tta", action="store_true",
                   help="also report flip test-time augmentation's top-1 (the average of each image's and its "
                        "mirror's logits) as its own figure; top-1 stays single-view; refused for digits")
    s.add_argument("--labels", choices=["fine", "coarse"], help="CIFAR-100 label set (default: the model's own)")
    s.add_argument("--out", help="report directory (default: reports/TAG for a tag; reports/TAG-onnx, "
                   "-torchscript or -safetensors for a file); an earlier report there is replaced whole (its figures "
                   "too), other files are kept")
    s.add_argument("--run-log", help="a run's log.jsonl to plot training curves from")
    s.add_argument("--no-figures", action="store_true", help="JSON/Markdown/HTML without t-SNE and activations")

    s = sub.add_parser("study", help="run a study file (variants x seeds) and write one report with confidence "
                       "intervals; see README, Studies")
    s.set_defaults(func=cmd_study)
    s.add_argument("file", nargs="?", help="a study .toml file, or a shipped study's name (none: list them)")
    _add_study_args(s)
    s.add_argument("--dataset", help="replace the study's dataset (variants naming their own keep it)")
    s.add_argument("--epochs", type=int, help="replace every variant's epochs")

    s = sub.add_parser("experiment", help="train a family's variants (a shipped study) and write one comparison "
                       "report; or run a study FILE")
    s.set_defaults(func=cmd_experiment)
    s.add_argument("family", help="lenet5, resnet or mlp (the shipped study experiment_FAMILY on --dataset), or a "
                   "study .toml file")
    s.add_argument("--dataset", help="dataset (required with a family)")
    s.add_argument("--epochs", type=int, help="replace every variant's epochs")
    s.add_argument("--seed", type=int, default=0, help="first seed")
    s.add_argument("--labels", default="fine", choices=["fine", "coarse"], help="CIFAR-100 label set")
    _add_study_args(s)

    s = sub.add_parser("demo", help="the main job: ingest MNIST, train LeNet-5, evaluate, export, report")
    s.set_defaults(func=cmd_demo)
    s.add_argument("--root", help="MNIST root (IDX files or train/ test/ PNG folders)")
    s.add_argument("--download", action="store_true", help="fetch MNIST's official files instead (MD5-checked)")
    s.add_argument("--epochs", type=int, default=5)
    s.add_argument("--out", default="reports/demo")

    s = sub.add_parser("publish", help="copy a run's weights into the package manifest (maintainers)")
    s.set_defaults(func=cmd_publish)
    s.add_argument("weights", help="a run's model.safetensors")
    s.add_argument("--url", help="download URL to record")
    s.add_argument("--force", action="store_true",
                   help="replace the entry even if the file's test top-1 is not better (or was not measured)")

    s = sub.add_parser("cards", help="write the model cards (docs/weights/) from the manifest")
    s.set_defaults(func=cmd_cards)
    s.add_argument("--out", type=Path, default=cards.CARDS_DIR, help="folder (default: docs/weights in the checkout)")
    s.add_argument("--check", action="store_true", help="write nothing; rc 1 and the names if a card is out of date")

    s = sub.add_parser("weights", help="list, pull and verify weights files (the zoo wheel ships only the small ones)")
    s.set_defaults(func=cmd_weights)
    ws = s.add_subparsers(dest="weights_cmd", required=True)
    w = ws.add_parser("list", help="every manifest tag: size, installed or not, and where")
    w.add_argument("pattern", nargs="?", help="wildcard, e.g. 'resnet*'")
    w = ws.add_parser("pull", help="fetch weights files into $ZOO_HOME/weights (sha256-checked, for offline use)")
    w.add_argument("tags", nargs="*", metavar="TAG", help="manifest tags or wildcards (resnet18.cifar10, 'resnet*')")
    w.add_argument("--all", action="store_true", help="every tag in the manifest")
    w.add_argument("--from", dest="source", metavar="DIR_OR_URL",
                   help="a folder holding the files (a zoo checkout's zoo/weights, a copy on a USB stick) or an "
                        "http(s):// or file:// base URL (a mirror); default: $ZOO_WEIGHTS_URL, else each entry's url")
    w.add_argument("--no-progress", action="store_true", help="no progress bars")
    ws.add_parser("verify", help="sha256 of every installed copy against the manifest (rc 2 if one differs)")
    return p


def cmd_info(_) -> int:
    lines = [f"zoo {__version__}", f"python {platform.python_version()}", f"torch {torch.__version__}",
             f"numpy {numpy.__version__}"]
    for mod in ("torchvision", "onnx", "onnxruntime", "onnxscript", "safetensors", "ffcv"):
        try:
            lines.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            lines.append(f"{mod} not installed")
    f = native.features()
    lines.append(f"native extension: {'yes' if f['native'] else 'NO (PIL/torch fallbacks)'}")
    if f["native"]:
        lines.append(f"  jpeg: {f['jpeg_version'] or 'no (PIL fallback)'}; png: "
                     f"{('libpng ' + f['png_version']) if f['png'] else 'no (PIL fallback)'}; "
                     f"threads: {f['hardware_threads']}")
    devices = ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    lines.append(f"devices: {', '.join(devices)}")
    bf16 = _cpu_bf16_flags()
    lines.append("cpu bf16: " + (f"native ({', '.join(bf16)}): zoo train --bf16 --channels-last trains conv nets "
                                 "faster (README)" if bf16 else "not native (or unknown): keep the fp32 default"))
    try:
        import onnxruntime as ort

        lines.append(f"onnxruntime providers: {', '.join(ort.get_available_providers())}")
    except ImportError:
        pass
    lines.append(f"loader backends: native{'' if f['native'] else ' (unavailable)'}, gpu, torch, ffcv"
                 f"{'' if _has('ffcv') else ' (not installed)'}")
    lines.append("eval backends: torch, torchscript, onnxruntime; auto = "
                 + ", ".join(f"{b} on {d.upper() if d == 'cpu' else 'CUDA'}" for d, b in AUTO_BACKEND.items()))
    print("\n".join(lines))
    return 0


def _cpu_bf16_flags() -> list[str]:
    """The CPU's native bf16 instruction sets, from /proc/cpuinfo (Linux; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    return [f for f in ("amx_bf16", "avx512_bf16") if f in flags]


def _has(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def cmd_list(a) -> int:
    if a.recipes:
        base = Recipe().to_dict()
        print("defaults: " + ", ".join(f"{k}={v}" for k, v in base.items()))
        for name, rec in RECIPES.items():
            if a.pattern is None or fnmatch.fnmatch(name, a.pattern):
                changed = ", ".join(f"{k}={v}" for k, v in rec.to_dict().items() if v != base[k])
                print(f"{name:<15}{changed or '(the defaults)'}")
        return 0
    entries = read_manifest()
    if a.markdown:
        print(cards.table(e for t, e in entries.items() if not a.pattern or fnmatch.fnmatch(t, a.pattern)), end="")
        return 0
    print(f"{'model':<16}{'default dataset':<17}shipped weights (test top-1)")
    for n in list_models(a.pattern):
        w = ", ".join(f"{t.split('.', 1)[1]} {e['metrics']['top1'] * 100:.2f}%" for t, e in entries.items()
                      if t.split(".")[0] == n and e.get("metrics"))
        print(f"{n:<16}{default_dataset(n):<17}{w or '-'}")
    print(f"\nrecipes: {', '.join(RECIPES)} (values: python -m zoo list --recipes)")
    return 0


def cmd_ingest(a) -> int:
    if a.download:
        a.root = download(a.dataset, a.root, mirror=a.mirror)
    elif not a.root:
        raise ZooError("ingest: give --root DIR (a folder with the dataset's files) or --download")
    elif a.mirror:
        raise ZooError("--mirror goes with --download")
    opts = {}
    if a.resize is not None:  # --resize 0 is refused by ingest, not silently ignored
        opts["resize"] = a.resize
    if a.classes:
        opts["classes"] = a.classes.split(",")
    if a.threads is not None:
        opts["threads"] = a.threads
    done = ingest(a.dataset, a.root, splits=a.splits.split(",") if a.splits else None, force=a.force,
                  allow_partial=a.allow_partial, **opts)
    for split, path in done.items():
        s = open_split(a.dataset, split)
        m = s.meta
        skipped = f", {m['skipped_non_images']} non-image files skipped" if m.get("skipped_non_images") else ""
        partial = f", PARTIAL (published: {m['published_samples']})" if m.get("partial") else ""
        print(f"{a.dataset}/{split}: {len(s)} images {tuple(m['shape'])}, {len(s.classes)} classes, "
              f"mean {m['mean']} std {m['std']}{skipped}{partial} -> {path}")
    return 0


def cmd_train(a) -> int:
    over = {f.name: getattr(a, f.name) for f in fields(Recipe)
            if f.name not in ("epochs", "model") and getattr(a, f.name) is not None}
    if a.model_opt:  # merged into the recipe's own model options (e.g. fast_convnet's dropout)
        base = get_recipe(a.recipe or default_recipe(a.name)).model
        over["model"] = {**base, **_model_opts(a.model_opt)}
    res = train(a.name, a.dataset, a.recipe, epochs=a.epochs, out_dir=a.out, device=a.device, seed=a.seed,
                resume=a.resume, init=a.init, train_last=a.train_last, train_subset=a.train_subset,
                compile=a.compile, bf16=a.bf16, channels_last=a.channels_last, tensorboard=a.tensorboard,
                progress=not a.no_progress, fp16_weights=a.fp16_weights, labels=a.labels, overwrite=a.overwrite,
                **over)
    last = res.history[-1] if res.history else {}
    first = res.history[0].get("first_step_seconds") if res.history else None
    warm = f" (first step, incl. compile/autotune: {first:.1f} s)" if first is not None else ""
    print(f"trained {a.name} on {a.dataset}: {len(res.history)} epochs in {res.train_seconds:.1f} s of training{warm}; "
          f"last train acc {last.get('train_acc', 0) * 100:.2f}%"
          + (f", val acc {last['val_acc'] * 100:.2f}%" if "val_acc" in last else ""))
    if res.test is not None:
        print(res.test.summary())
    print(f"weights: {res.weights}\nlog: {res.out_dir / 'log.jsonl'}  curves: {res.out_dir / 'curves.png'}")
    return 0


def cmd_eval(a) -> int:
    src = a.model
    model = None

    if Path(src).suffix not in EXPORTED_SUFFIXES:
        model = load(src)
        dataset = a.dataset or model.zoo_meta["dataset"]
    else:
        dataset = a.dataset or load_exported(src).meta.get("dataset") or ""
        if not dataset:
            print(f"error: {src} does not record its dataset; pass --dataset", file=sys.stderr)
            return 2

    backends = a.compare.split(",") if a.compare else [a.backend]
    bad = [b for b in backends if b is not None and b not in EVAL_BACKENDS]
    if bad:  # before the first backend spends minutes on the test set
        raise ZooError(f"--compare: unknown backend {bad[0]!r}; {suggest(bad[0], EVAL_BACKENDS)}")
    results = []
    for b in backends:
        target = model if model is not None else src
        r = evaluate(target, dataset, backend=b, device=a.device, batch_size=a.batch_size, split=a.split, tta=a.tta,
                     labels=a.labels)
        print(r.summary())
        results.append(r)
    comparison = compare(results) if len(results) > 1 else None
    if comparison:
        for row in comparison["rows"]:
            print("  " + "  ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))

    # Each source (registry tag, exported file, weights file) has its own default folder: an .onnx file's report
    # must not silently replace the registry model's; where one still replaces another (--out), it says so.
    out = Path(a.out) if a.out else default_report_dir(results[0].model, src)
    source = {"model": str(src), "backends": [r.backend for r in results]}
    note = replaced_note(out, source)
    run_log = a.run_log
    if run_log is None and Path(src).suffix == ".safetensors" and (Path(src).parent / "log.jsonl").exists():
        run_log = Path(src).parent / "log.jsonl"  # a run directory: plot its training curves
    files = eval_report(results, out, model=None if a.no_figures else model, run_log=Path(run_log) if run_log else None,
                        comparison=comparison, source=source)
    if note:
        print(note)
    print(f"report: {files['html']}  ({files['md'].name}, {files['json'].name})")
    return 0


def _add_study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, help="seeds per variant (default: the file's `seeds`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_values",
                   help="replace a recipe field or run key in every variant, e.g. batch_size=64 (repeatable)")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once, as separate processes sharing the cores")
    p.add_argument("--only", action="append", metavar="VARIANT",
                   help="run only this variant: its name, folder name, grid name or part (a group such as "
                        "lenet; repeatable)")
    p.add_argument("--out", help="study folder (default: reports/study-NAME; experiments: reports/experiment-FAMILY-"
                   "DATASET); finished (variant, seed) runs in it are skipped, interrupted ones resumed")
    p.add_argument("--report", action="store_true", help="train nothing: write the report over the finished runs")
    p.add_argument("--merge", action="append", default=[], metavar="DIR",
                   help="with --report: also read finished runs from this study folder (another machine's; repeatable)")
    p.add_argument("--check", action="store_true", help="validate the file and print the runs; train nothing")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _run_study_cmd(study, a, out: Path, overrides: dict) -> int:
    if a.merge and not a.report:
        raise ZooError("--merge goes with --report (it reads other machines' study folders into one report)")
    if a.check:
        for r in S.plan(study, a.only):
            done = "finished" if S.finished(r, out) else "to run"
            print(f"{r.variant.name} | seed {r.seed} | {r.variant.model} on {r.dataset}"
                  f"{f' (for {r.variant.dataset})' if r.stand_in else ''} | {r.variant.epochs} ep | {done}")
        return 0
    if a.report:
        files = S.write_study_report(study, out, a.merge)
    else:
        res = S.run_study(study, out, jobs=a.jobs, only=a.only, device=a.device, progress=not a.no_progress,
                          overrides=overrides)
        files = res["report"]
        if res["busy"]:
            print(f"{len(res['busy'])} run(s) were being trained by another process: "
                  + ", ".join(f"{v} seed {s}" for v, s in res["busy"]))
    if files:
        print(f"report: {files['html']}")
    return 0


def cmd_study(a) -> int:
    if not a.file:
        for name, path in S.shipped_studies().items():
            print(f"{name:<24}{path}")
        return 0
    overrides = {"seeds": a.seeds, "epochs": a.epochs, "dataset": a.dataset,
                 "set_values": S.parse_set(a.set_values)}
    study = S.load_study(a.file, **overrides)
    return _run_study_cmd(study, a, Path(a.out) if a.out else S.default_out(study), overrides)


def cmd_experiment(a) -> int:
    if a.family.endswith(".toml") or Path(a.family).is_file():  # a study file: `study FILE` under its old name
        overrides = {"seeds": a.seeds, "epochs": a.epochs, "dataset": a.dataset, "first_seed": a.seed,
                     "set_values": S.parse_set(a.set_values)}
        study = S.load_study(a.family, **overrides)
        return _run_study_cmd(study, a, Path(a.out) if a.out else S.default_out(study), overrides)
    if not a.dataset:
        raise ZooError(f"experiment {a.family}: --dataset is required with a family (e.g. --dataset cifar10)")
    study, overrides = experiment_study(a.family, a.dataset, epochs=a.epochs, seed=a.seed, seeds=a.seeds,
                                        labels=a.labels, set_values=S.parse_set(a.set_values))
    out = Path(a.out) if a.out else Path("reports") / f"experiment-{a.family}-{a.dataset}"
    return _run_study_cmd(study, a, out, overrides)


def cmd_demo(a) -> int:
    """Ingest MNIST, train LeNet-5, evaluate on three backends, export ONNX + TorchScript, write the report."""
    out = Path(a.out)
    if a.download:
        a.root = download("mnist", a.root)
    elif not a.root:
        raise ZooError("demo: give --root DIR (MNIST's IDX files or PNG folders) or --download")
    ingest("mnist", a.root)
    # The demo remakes its whole output folder each time it runs (the engine prints that it replaced the run).
    res = train("lenet5", "mnist", "fast_lenet", epochs=a.epochs, out_dir=out / "run", overwrite=True)
    model = res.model.cpu().eval()
    results = [evaluate(model, "mnist", backend=b) for b in ("torch", "torchscript", "onnxruntime")]
    for r in results:
        print(r.summary())
    comparison = compare(results)

    example = torch.zeros(1, 1, 28, 28)
    onnx_path = to_onnx(model, example, out / "lenet5.mnist.onnx")
    ts_path = to_torchscript(model, example, out / "lenet5.mnist.pt")
    files = eval_report(results, out, model=model, run_log=res.out_dir / "log.jsonl", comparison=comparison)
    print(f"exported: {onnx_path}, {ts_path}\nreport: {files['html']}")
    return 0


def cmd_publish(a) -> int:
    tag = publish(Path(a.weights), url=a.url, force=a.force)
    print(f"published {tag}")
    return 0


def cmd_cards(a) -> int:
    entries = read_manifest()
    if a.check:
        bad = cards.stale(entries, a.out)
        if bad:
            print(f"out of date in {a.out}: {', '.join(bad)}; run python -m zoo cards", file=sys.stderr)
            return 1
        print(f"{len(entries)} cards in {a.out} match the manifest")
        return 0
    written = cards.write(entries, a.out)
    print(f"wrote {len(written)} files to {a.out}")
    return 0


def cmd_weights(a) -> int:
    if a.weights_cmd == "list":
        rows, total, have = [], 0, 0
        for tag, e in W.read_manifest().items():
            if a.pattern and not fnmatch.fnmatchcase(tag, a.pattern):
                continue
            found = W.copies(tag, e)
            total += e["size"]
            have += e["size"] if found else 0
            where = f"{found[0][0]}: {found[0][1]}" if found else f"- (python -m zoo weights pull {tag})"
            rows.append(f"{tag:<24}{e['size'] / 1e6:>8.2f} MB  {'installed' if found else 'missing':<11}{where}")
        print(f"{'tag':<24}{'size':>11}  {'status':<11}where")
        print("\n".join(rows))
        print(f"{len(rows)} files, {total / 1e6:.1f} MB; installed {have / 1e6:.1f} MB")
        return 0
    if a.weights_cmd == "pull":
        if bool(a.tags) == a.all:
            raise ZooError("weights pull: name TAGs (or wildcards) or pass --all, not both")

        def echo(row):
            tag, status, path = row
            print(f"{tag}: {'pulled to' if status == 'pulled' else 'already installed:'} {path}")

        done = W.pull(None if a.all else a.tags, source=a.source, progress=not a.no_progress, echo=echo)
        print(f"{sum(s == 'pulled' for _, s, _ in done)} pulled, {sum(s == 'installed' for _, s, _ in done)} "
              "already installed")
        return 0
    rows = W.verify()
    for tag, where, path, ok in rows:
        print(f"{'ok ' if ok else 'BAD'} {tag:<24}{where:<13}{path}")
    bad = [str(path) for _, _, path, ok in rows if not ok]
    if bad:
        raise ZooError(f"{len(bad)} of {len(rows)} installed weights files do not match the manifest's sha256 "
                       f"({', '.join(bad)}); delete them and run python -m zoo weights pull")
    print(f"{len(rows)} installed files match the manifest")
    return 0


_format_warning = warnings.formatwarning


def _cli_warning(message, category, filename, lineno, line=None):
    """zoo's own warnings (a bare name's dataset, a far-off image, non-finite weights) read as one 'warning:' line
    on the command line; other libraries' keep Python's format, which says where they come from."""
    if category is UserWarning and Path(filename).resolve().is_relative_to(Path(__file__).resolve().parent):
        return f"warning: {message}\n"
    return _format_warning(message, category, filename, lineno, line)


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _cli_warning
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ZooError as e:  # ExportError included
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `python -m zoo list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
