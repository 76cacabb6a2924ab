"""python -m export {onnx,torchscript} [NAMES... | --all] [--dataset D] [--out DIR] ..."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch

import zoo
from zoo.artifacts import SUPPORTED_OPSETS, to_onnx, to_torchscript
from zoo.data import Loader, open_split, sample_indices
from zoo.errors import ExportError, ZooError
from zoo.io import check_tag, contained


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
    return p


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
    if args.format == "onnx":
        if args.opset not in SUPPORTED_OPSETS:
            print(f"error: --opset {args.opset} unsupported; use {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}",
                  file=sys.stderr)
            return 2
        if args.batch != "dynamic" and not (args.batch.isdigit() and int(args.batch) > 0):
            print(f"error: --batch must be 'dynamic' or a positive integer, got {args.batch!r}", file=sys.stderr)
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
        except ZooError as e:
            # As in `python -m zoo`: 2 for a bad argument or input file, 1 for an export that failed (an ExportError,
            # which is a ZooError too).
            failed = max(failed, 1 if isinstance(e, ExportError) else 2)
            print(f"error: {e}" if name in str(e) else f"error: {name}: {e}", file=sys.stderr)  # name it once
    return failed


if __name__ == "__main__":
    sys.exit(main())
