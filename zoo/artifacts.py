"""Export any nn.Module to ONNX or TorchScript, verified against eager PyTorch: the functions behind
`python -m export` (which re-exports them), usable on any module.

    from zoo.artifacts import to_onnx, to_torchscript
    to_onnx(model, torch.randn(1, 3, 32, 32), "model.onnx")   # verified; report written beside it
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import ExportError
from .io import atomic_write, make_readable
from .runtime import Exported

SUPPORTED_OPSETS = range(13, 22)
TOLERANCE = 1e-4  # max |Δlogit| in fp32
TOLERANCE_FP16 = 5e-2


def _eval_mode(model: nn.Module) -> nn.Module:
    if model.training:
        warnings.warn("model was in training mode; switched to eval() for export", stacklevel=3)
        model.eval()
    return model


@contextmanager
def _staged(path):
    """(final path, temp file beside it). The temp file keeps the artifact's suffix (so it can be
    loaded for verification) and is removed on exit unless `_atomic_finish` moved it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError("not writable")
        fd, name = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp" + path.suffix)
    except OSError as e:
        raise ExportError(f"output directory {path.parent} is not writable: {e}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield path, tmp
    finally:
        if tmp.exists():
            tmp.unlink()


def _meta_props(model: nn.Module, example: torch.Tensor, meta: dict | None) -> dict[str, str]:
    meta = dict(meta or getattr(model, "zoo_meta", {}) or {})
    props = {
        "tag": meta.get("tag") or getattr(model, "zoo_name", type(model).__name__),
        "dataset": meta.get("dataset", ""),
        "classes": json.dumps(meta.get("classes", [])),
        "mean": json.dumps(meta.get("mean", [])),
        "std": json.dumps(meta.get("std", [])),
        "input_size": json.dumps(list(example.shape[1:])),
        "layout": "NCHW",
        "weights_sha256": meta.get("sha256", ""),
    }
    return props


def _atomic_finish(tmp: Path, path: Path, report: dict | None) -> Path:
    if report is not None:
        report["artifact"] = path.name
        text = json.dumps(report, indent=1)
        atomic_write(path.with_suffix(path.suffix + ".verify.json"), lambda t: t.write_text(text))
    make_readable(tmp)  # mkstemp made it 0600: an export is written for others (a web server, another user) to read
    os.replace(tmp, path)
    return path


def to_onnx(model: nn.Module, example: torch.Tensor, path, *, opset: int = 18, dynamic_batch: bool = True,
            fp16: bool = False, verify_inputs: list[torch.Tensor] | None = None, verify: bool = True,
            meta: dict | None = None, dynamo: bool | None = None) -> Path:
    """Export to ONNX (dynamo exporter, falling back to the TorchScript-based one) and verify with ONNX Runtime.

    The file only appears at `path` once checked and verified; `metadata_props` carry tag, classes,
    mean/std, input size and layout, weights sha256, and which exporter was used.
    """
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"unsupported opset {opset}; supported: {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    import onnx  # heavy (protobuf and its ops): only when an ONNX file is written

    with _staged(path) as (path, tmp):
        model = _eval_mode(model).cpu()
        example = example.cpu()
        export_model = model.half() if fp16 else model
        ex = example.half() if fp16 else example
        try:
            errors, used = [], None
            for use_dynamo in ([dynamo] if dynamo is not None else [True, False]):
                try:
                    _onnx_export(export_model, ex, tmp, opset, dynamic_batch, use_dynamo)
                    used = "dynamo" if use_dynamo else "torchscript"
                    break
                except Exception as e:  # try the next exporter, report all if none works
                    errors.append(f"{'dynamo' if use_dynamo else 'torchscript'} exporter: {type(e).__name__}: {e}")
        finally:
            if fp16:
                model.float()  # back to the caller's fp32 model, which verification compares against
        if used is None:
            raise ExportError("ONNX export failed:\n" + "\n".join(errors))
        proto = onnx.load(str(tmp))
        props = _meta_props(model, example, meta) | {"exporter": used, "dtype": "float16" if fp16 else "float32"}
        del proto.metadata_props[:]
        for k, v in props.items():
            proto.metadata_props.add(key=k, value=v)
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
        report = None
        if verify:
            report = verify_artifact(model, tmp, example, verify_inputs, fp16=fp16,
                                     batches=None if dynamic_batch else (len(example),))
            report["exporter"] = used
        return _atomic_finish(tmp, path, report)


def _onnx_export(model, example, tmp: Path, opset: int, dynamic_batch: bool, dynamo: bool) -> None:
    kwargs: dict[str, Any] = dict(input_names=["input"], output_names=["logits"], opset_version=opset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            if dynamic_batch:
                # Positional form: works whatever the module names its forward argument.
                kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=65536)},)
            prog = torch.onnx.export(model, (example,), dynamo=True, verbose=False, **kwargs)
            prog.save(str(tmp))
        else:
            if dynamic_batch:
                kwargs["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, **kwargs)


def to_torchscript(model: nn.Module, example: torch.Tensor, path, *, verify: bool = True,
                   verify_inputs: list[torch.Tensor] | None = None, meta: dict | None = None) -> Path:
    """torch.jit.script (falling back to trace), then freeze; metadata stored as `_extra_files`."""
    with _staged(path) as (path, tmp):
        model = _eval_mode(model).cpu()
        example = example.cpu()
        method = "script"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ts = torch.jit.script(model)
            except Exception:
                method = "trace"
                ts = torch.jit.trace(model, example)
            ts = torch.jit.freeze(ts.eval())
        props = _meta_props(model, example, meta) | {"exporter": f"torchscript-{method}+freeze"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notice
            torch.jit.save(ts, str(tmp), _extra_files={"zoo_meta.json": json.dumps(props)})
        report = None
        if verify:
            report = verify_artifact(model, tmp, example, verify_inputs)
            report["exporter"] = props["exporter"]
        return _atomic_finish(tmp, path, report)


def verify_artifact(model: nn.Module, artifact: Path, example: torch.Tensor,
                    inputs: list[torch.Tensor] | None = None, *, fp16: bool = False,
                    batches: tuple[int, ...] | None = (1, 256)) -> dict:
    """Compare an artifact with eager PyTorch on random inputs (batch 1 and a large batch) and on any
    given real inputs. Raises ExportError (leaving nothing behind) when max |Δlogit| or top-1 agreement fails."""
    run = Exported(artifact)
    g = torch.Generator().manual_seed(0)
    shape = tuple(example.shape[1:])
    checks = [(f"random_batch{b}", torch.randn((b, *shape), generator=g)) for b in batches or (1, 256)]
    checks += [(f"real_{i}", x.cpu().float()) for i, x in enumerate(inputs or [])]
    tol = TOLERANCE_FP16 if fp16 else TOLERANCE
    report: dict[str, Any] = {"artifact": str(artifact.name), "backend": run.kind, "tolerance": tol, "checks": []}
    ok = True
    with torch.inference_mode():
        for name, x in checks:
            ref = model(x).float()
            got = run(x)
            diff = float((ref - got).abs().max())
            agree = float((ref.argmax(1) == got.argmax(1)).float().mean())
            passed = diff <= tol and (agree == 1.0 or fp16)
            ok &= passed
            report["checks"].append({"input": name, "batch": len(x), "max_abs_logit_diff": diff,
                                     "top1_agreement": agree, "passed": passed})
    report["passed"] = ok
    if not ok:
        raise ExportError(f"verification of {artifact.name} failed: {json.dumps(report['checks'])}")
    return report


verify = verify_artifact
