"""python -m export {onnx,torchscript} [NAMES... | --all] [--dataset D] [--out DIR] [--int8] ...
python -m export web TAG --out DIR"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

import zoo
from zoo.artifacts import (
    CALIBRATION_COUNT,
    CALIBRATION_SEED,
    SUPPORTED_OPSETS,
    calibration_subset,
    sidecar_path,
    to_onnx,
    to_onnx_int8,
    to_torchscript,
)
from zoo.data import Loader, open_split, sample_indices
from zoo.errors import ExportError, ZooError
from zoo.io import check_tag, contained, make_readable

# The ONNX Runtime Web files the page needs (the wasm-only UMD build loads the SIMD wasm and its loader from its own
# folder); taken from an installed npm package, never downloaded by zoo.
ORT_WEB_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs")
ORT_WEB_VERSION = "1.30.0"
REPO = Path(__file__).resolve().parent.parent


MAX_BATCH = 65536  # the dynamic batch's upper bound too; a larger example would not fit in memory


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export", description="Export zoo models with verified parity.")
    sub = p.add_subparsers(dest="format", required=True)
    for fmt in ("onnx", "torchscript"):
        s = sub.add_parser(fmt, help=f"export to {fmt}")
        s.add_argument("names", nargs="*", help="model tags (lenet5_bn, lenet5_bn.cifar10) or .safetensors files")
        s.add_argument("--all", action="store_true", help="every shipped weights entry")
        s.add_argument("--dataset", help="dataset for bare model names (default: the model's default dataset)")
        s.add_argument("--out", default="artifacts", help="output directory (default: artifacts)")
        s.add_argument("--no-verify", action="store_true", help="skip parity verification")
        s.add_argument("--max-real", type=int, default=None,
                       help="verify on a seeded random sample of this many real test images "
                            "(default: the whole test set)")
        if fmt == "onnx":
            s.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
            s.add_argument("--batch", default="dynamic", help="'dynamic' (default) or a fixed batch size")
            s.add_argument("--fp16", action="store_true", help="export half-precision weights and inputs")
            s.add_argument("--int8", action="store_true",
                           help="also write TAG.int8.onnx: static INT8 (QDQ, per-channel weights) calibrated on "
                                f"{CALIBRATION_COUNT} train images (seed {CALIBRATION_SEED}), verified on the test set "
                                "(top-1 within 0.3 points of fp32); needs the dataset ingested")
    w = sub.add_parser("web", help="a static folder that classifies images in the browser (ONNX Runtime Web)")
    w.add_argument("name", help="model tag (lenet5_bn.cifar10) or a .safetensors file")
    w.add_argument("--out", required=True, help="output folder (created; files of an earlier web export replaced)")
    w.add_argument("--ort-web", default=None,
                   help="folder holding ONNX Runtime Web's dist files (default: $ZOO_ORT_WEB, else "
                        "node_modules/onnxruntime-web/dist under .cache/node/ or the current folder)")
    return p


def ort_web_dist(arg: str | None) -> Path:
    """The folder with ORT-web's files: --ort-web, $ZOO_ORT_WEB, or an npm install in .cache/node/ or here."""
    candidates = [Path(arg)] if arg else [Path(os.environ["ZOO_ORT_WEB"])] if os.environ.get("ZOO_ORT_WEB") else [
        REPO / ".cache/node/node_modules/onnxruntime-web/dist", Path("node_modules/onnxruntime-web/dist")]
    for c in candidates:
        if all((c / f).is_file() for f in ORT_WEB_FILES):
            return c
    where = " or ".join(str(c) for c in candidates)
    raise ZooError(f"ONNX Runtime Web not found ({', '.join(ORT_WEB_FILES)} in {where}); install it with "
                   f"`npm install --prefix .cache/node onnxruntime-web@{ORT_WEB_VERSION}` (or pass --ort-web DIR)")


def export_web(name: str, out: Path, ort_dir: str | None) -> Path:
    """model.onnx + model.onnx.json (the contract) + index.html + ORT-web's files in `out`. Built in a temporary
    folder beside it, then each file renamed into place: a failed export leaves `out` as it was."""
    dist = ort_web_dist(ort_dir)
    model = zoo.load(name)
    c, h, w = model.zoo_meta["input_size"]
    out.mkdir(parents=True, exist_ok=True)
    make_readable(out)
    with tempfile.TemporaryDirectory(prefix=".web-", dir=out.parent) as tmp:
        stage = Path(tmp)
        to_onnx(model, torch.zeros(1, c, h, w), stage / "model.onnx")
        (stage / "model.onnx.verify.json").unlink()  # the page needs the model and its contract only
        shutil.copyfile(Path(__file__).with_name("web") / "index.html", stage / "index.html")
        for f in ORT_WEB_FILES:
            shutil.copyfile(dist / f, stage / f)
        names = ["model.onnx", sidecar_path("model.onnx").name, "index.html", *ORT_WEB_FILES]
        for f in names:
            make_readable(stage / f)
            os.replace(stage / f, out / f)
    return out



@functools.lru_cache(maxsize=4)  # --all verifies many models per dataset: load each test split once
def real_inputs(dataset: str, limit: int | None) -> tuple[torch.Tensor, ...]:
    """The ingested test split in batches (a seeded random sample of `limit` images: splits are class-sorted,
    so the first N would cover one or two classes), or nothing (with a note) when it is not in the cache."""
    try:
        split = open_split(dataset, "test")
    except ZooError as e:
        print(f"note: verifying on random inputs only: {e}", file=sys.stderr)
        return ()
    idx = sample_indices(len(split), limit) if limit and limit < len(split) else None
    return tuple(x.clone() for x, _ in Loader(split, 1000, augment=None, shuffle=False, indices=idx))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.format == "web":
        try:
            out = export_web(args.name, Path(args.out), args.ort_web)
        except ZooError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1 if isinstance(e, ExportError) else 2
        except OSError as e:
            print(f"error: --out {args.out}: {e}", file=sys.stderr)
            return 2
        print(f"{args.name}: wrote {out}/ (index.html, model.onnx, model.onnx.json, ONNX Runtime Web); serve it with "
              f"`python -m http.server -d {out}` and open http://127.0.0.1:8000/")
        return 0
    if args.format == "onnx":
        if args.opset not in SUPPORTED_OPSETS:
            print(f"error: --opset {args.opset} unsupported; use {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}",
                  file=sys.stderr)
            return 2
        if args.batch != "dynamic" and not (args.batch.isdigit() and 0 < int(args.batch) <= MAX_BATCH):
            print(f"error: --batch must be 'dynamic' or an integer in 1..{MAX_BATCH}, got {args.batch!r}",
                  file=sys.stderr)
            return 2
        if args.int8 and (args.fp16 or args.batch != "dynamic"):
            print("error: --int8 quantizes the fp32 model with a dynamic batch; leave out --fp16 and --batch",
                  file=sys.stderr)
            return 2
    if args.max_real is not None and args.max_real < 1:
        print(f"error: --max-real must be >= 1, got {args.max_real}", file=sys.stderr)
        return 2
    names = list(args.names)
    if args.all:
        names += zoo.list_pretrained()
    if not names:
        print("error: give model names or --all", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"error: --out {out}: {e}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        tag = name if "." in name or args.dataset is None else f"{name}.{args.dataset}"
        try:
            model = zoo.load(tag)
            meta = model.zoo_meta
            c, h, w = meta["input_size"]
            batch = 1 if args.format == "torchscript" or args.batch == "dynamic" else int(args.batch)
            example = torch.zeros(batch, c, h, w)
            inputs = [] if args.no_verify else list(real_inputs(meta["dataset"], args.max_real))
            # The file name comes from the weights' embedded tag (a file zoo may not have written): checked, and
            # kept inside --out.
            dest = contained(out, check_tag(meta["tag"], what=f"{name}: tag") + (".onnx" if args.format == "onnx"
                                                                                  else ".pt"), what="--out")
            if args.format == "onnx":
                if args.batch != "dynamic":
                    inputs = [x[: int(args.batch)] for x in inputs if len(x) >= int(args.batch)][:1]
                path = to_onnx(model, example, dest, opset=args.opset, dynamic_batch=args.batch == "dynamic",
                               fp16=args.fp16, verify=not args.no_verify, verify_inputs=inputs)
            else:
                path = to_torchscript(model, example, dest, verify=not args.no_verify, verify_inputs=inputs)
            note = "" if args.no_verify else f" (verified: {path.name}.verify.json)"
            print(f"{tag}: wrote {path}{note}")
            if args.format == "onnx" and args.int8:
                print(export_int8(model, example, dest.with_name(dest.stem + ".int8.onnx"), meta, args))
        except ZooError as e:
            # As in `python -m zoo`: 2 for a bad argument or input file, 1 for an export that failed (an ExportError,
            # which is a ZooError too).
            failed = max(failed, 1 if isinstance(e, ExportError) else 2)
            print(f"error: {e}" if name in str(e) else f"error: {name}: {e}", file=sys.stderr)  # name it once
    return failed


def export_int8(model, example, dest: Path, meta, args) -> str:
    """Calibrate on the recorded train subset, verify on the test split (or --max-real of it), say how it went."""
    try:
        train = open_split(meta["dataset"], "train")
    except ZooError as e:
        raise ZooError(f"--int8 calibrates on {meta['dataset']}'s train split, which is not ingested: {e}") from None
    idx = calibration_subset(len(train))
    calib = torch.cat([x for x, _ in Loader(train, 256, augment=None, shuffle=False, indices=idx)])
    test = None
    if not args.no_verify:
        try:
            split = open_split(meta["dataset"], "test")
        except ZooError as e:
            raise ZooError(f"--int8 is verified on {meta['dataset']}'s test split, which is not ingested (or pass "
                           f"--no-verify): {e}") from None
        sub = sample_indices(len(split), args.max_real) if args.max_real and args.max_real < len(split) else None
        xs, ys = zip(*Loader(split, 1000, augment=None, shuffle=False, indices=sub))
        test = (torch.cat(xs), torch.cat(ys))
    path = to_onnx_int8(model, example[:1], dest, calibration=calib, test=test, verify=not args.no_verify,
                        opset=args.opset, calibration_info={"seed": CALIBRATION_SEED, "count": len(idx),
                                                             "indices": "zoo.data.sample_indices(len(train), count, "
                                                                        "seed)"})
    if args.no_verify:
        return f"{meta['tag']}: wrote {path} (INT8, not verified)"

    r = json.loads(Path(str(path) + ".verify.json").read_text())
    text = (f"{meta['tag']}: wrote {path} (INT8, verified: top-1 {r['top1_int8'] * 100:.2f}% vs fp32 "
            f"{r['top1_fp32'] * 100:.2f}% on {r['test_images']} test images; {r['speedup_vs_fp32']:.2f}x fp32 ONNX "
            f"Runtime at batch {r['speed_batch']} on this CPU)")
    if r["speedup_vs_fp32"] < 1:
        text += (f"\nnote: {meta['tag']}: INT8 is slower than fp32 here ({r['speedup_vs_fp32']:.2f}x): the net is too "
                 "small for int8 arithmetic to pay for its quantize/dequantize steps; deploy the fp32 file")
    return text


if __name__ == "__main__":
    sys.exit(main())
