"""Export any nn.Module to ONNX or TorchScript, verified against eager PyTorch, and to statically quantized INT8
ONNX, verified on labelled test images: the functions behind `python -m export` (which re-exports them).

    from zoo.artifacts import to_onnx, to_torchscript
    to_onnx(model, torch.randn(1, 3, 32, 32), "model.onnx")   # verified; report written beside it

Every file carries the preprocessing contract (`contract`: pixel scale, channel order, layout, resize, mean/std,
classes, output kind, provenance) in its metadata and in the sidecar `<file>.json`; docs/deploy.md documents it.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ._version import __version__
from .data import sample_indices
from .errors import ExportError
from .io import atomic_write, make_readable
from .runtime import Exported

SUPPORTED_OPSETS = range(13, 22)
TOLERANCE = 1e-4  # max |Δlogit| in fp32
TOLERANCE_FP16 = 5e-2


def _eval_mode(model: nn.Module, example=None) -> nn.Module:
    """The model in eval mode (warning if it was training), after checking what export was given."""
    if not isinstance(model, nn.Module):
        raise ExportError(f"export takes an nn.Module, got {type(model).__name__}")
    if example is not None and (not isinstance(example, torch.Tensor) or not example.is_floating_point()
                                or example.ndim < 2 or 0 in example.shape):
        raise ExportError("export needs an example input: a float tensor with a batch dimension (e.g. "
                          f"torch.zeros(1, C, H, W)), got {getattr(example, 'shape', type(example).__name__)}")
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


SCHEMA = "zoo-artifact/1"
PIXEL_SCALE = 1 / 255
# The preprocessing zoo applies (zoo.transforms.Preprocess, ingest): what a runtime outside zoo must repeat.
RESIZE = {"interpolation": "bilinear", "antialias": True, "align_corners": False}


def contract(meta: Mapping[str, Any] | None, example_shape, *, dtype: str = "float32", name: str = "") -> dict[str, Any]:
    """The preprocessing contract of an artifact (docs/deploy.md, "Metadata schema"): everything a runtime outside
    zoo needs to turn an image file into the model's input and its output into a class name. `meta` is the model's
    `zoo_meta` (any read-only mapping; read with [] and .get only); `example_shape` the (N, C, H, W) it was exported
    with. Plain values: the same keys and values in ONNX metadata, TorchScript's zoo_meta.json and `<file>.json`."""
    meta = meta if meta is not None else {}
    dims = [int(v) for v in tuple(example_shape)[1:]]
    image = len(dims) == 3  # (C, H, W); any other input (features of a plain nn.Module) has no pixel contract
    c, h, w = dims if image else (0, 0, 0)
    return {
        "schema": SCHEMA,
        "tag": str(meta.get("tag") or name),
        "dataset": str(meta.get("dataset") or ""),
        "classes": [str(v) for v in (meta.get("classes") or [])],
        "input_size": dims,
        "layout": "NCHW" if image else "N" + "".join(f"D{i}" for i in range(1, len(dims) + 1)),
        "dtype": dtype,
        # 1-channel models were trained on ITU-R 601 luma (PIL's "L"), 3-channel ones on RGB, never BGR.
        "channel_order": ("L" if c == 1 else "RGB") if image else None,
        "pixel_scale": PIXEL_SCALE if image else None,
        "mean": [float(v) for v in (meta.get("mean") or [])],
        "std": [float(v) for v in (meta.get("std") or [])],
        "resize": {**RESIZE, "size": [h, w]} if image else None,
        "output": "logits",
        "zoo_version": __version__,
        "sha256": str(meta.get("sha256") or ""),
    }


def describe(c: Mapping[str, Any]) -> str:
    """The contract in words: the ONNX doc_string, for people who open the file in Netron or a model hub."""
    if c["resize"] is None:  # not an image model
        return (f"{c['tag'] or 'model'} (zoo {c['zoo_version']}). Input 'input': {c['dtype']} [batch, "
                f"{', '.join(str(v) for v in c['input_size'])}]. Output 'logits'. Schema {c['schema']}.")
    chans = "grayscale (ITU-R 601 luma)" if c["channel_order"] == "L" else "RGB (not BGR)"
    size = "x".join(str(v) for v in c["input_size"][1:])
    text = (f"{c['tag'] or 'model'} (zoo {c['zoo_version']}). Input '{c.get('input_name', 'input')}': {c['dtype']} "
            f"{c['layout']} [batch, {', '.join(str(v) for v in c['input_size'])}], {chans} pixels resized to {size} "
            f"({c['resize']['interpolation']}, antialias, align_corners=False), scaled by 1/255 to 0..1, then per "
            f"channel (x - mean) / std with mean {c['mean']} and std {c['std']}. Output 'logits': raw "
            f"scores for the {len(c['classes'])} classes in metadata 'classes' (softmax for probabilities).")
    if c.get("quantization"):
        q = c["quantization"]
        cal = q["calibration"]
        seed = f" (seed {cal['seed']})" if "seed" in cal else ""
        text += f" INT8 ({q['format']}, per-channel weights), calibrated on {cal['count']} {cal['split']} images{seed}."
    return text + f" Schema {c['schema']}; the same keys are in the sidecar <file>.json."


def _meta_props(model: nn.Module, example: torch.Tensor, meta: Mapping[str, Any] | None, *,
                dtype: str = "float32") -> dict[str, Any]:
    meta = meta if meta is not None else getattr(model, "zoo_meta", None)
    return contract(meta, example.shape, dtype=dtype, name=getattr(model, "zoo_name", type(model).__name__))


def _onnx_value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _write_onnx_meta(tmp: Path, props: Mapping[str, Any]) -> None:
    import onnx

    proto = onnx.load(str(tmp))
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=_onnx_value(v))
    proto.doc_string = describe(props)
    onnx.save(proto, str(tmp))


def sidecar_path(path) -> Path:
    """`<file>.json`: the contract for runtimes that cannot read ONNX metadata (OpenCV DNN, onnxruntime-node/web)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _atomic_finish(tmp: Path, path: Path, report: dict | None, props: Mapping[str, Any]) -> Path:
    sidecar = json.dumps(dict(props), indent=1)
    atomic_write(sidecar_path(path), lambda t: t.write_text(sidecar + "\n"))
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

    The file only appears at `path` once checked and verified; its `metadata_props`, its `doc_string` (in words)
    and the sidecar `<file>.json` carry the preprocessing contract (`contract`) and which exporter was used.
    """
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"unsupported opset {opset}; supported: {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    import onnx  # heavy (protobuf and its ops): only when an ONNX file is written

    with _staged(path) as (path, tmp):
        model = _eval_mode(model, example).cpu()
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
        props = _meta_props(model, example, meta, dtype="float16" if fp16 else "float32") | {"exporter": used}
        _write_onnx_meta(tmp, props)
        onnx.checker.check_model(str(tmp), full_check=True)
        report = None
        if verify:
            report = verify_artifact(model, tmp, example, verify_inputs, fp16=fp16,
                                     batches=None if dynamic_batch else (len(example),))
            report["exporter"] = used
        return _atomic_finish(tmp, path, report, props)


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
    """torch.jit.script (falling back to trace), then freeze; the contract stored as the `_extra_files` entry
    `zoo_meta.json` (one JSON object, plain values) and as the sidecar `<file>.json`."""
    with _staged(path) as (path, tmp):
        model = _eval_mode(model, example).cpu()
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
            torch.jit.save(ts, str(tmp), _extra_files={"zoo_meta.json": json.dumps(props)})  # plain values
        report = None
        if verify:
            report = verify_artifact(model, tmp, example, verify_inputs)
            report["exporter"] = props["exporter"]
        return _atomic_finish(tmp, path, report, props)


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




INT8_MAX_TOP1_DROP = 0.003  # an INT8 file may lose at most 0.3 points of top-1 against its fp32 export
CALIBRATION_COUNT = 512  # train images: enough for stable min/max ranges, one second of ORT time for ResNet-18
CALIBRATION_SEED = 0


def calibration_subset(n: int, count: int = CALIBRATION_COUNT, seed: int = CALIBRATION_SEED):
    """The train-split indices an INT8 file is calibrated on: a seeded sample (zoo.data.sample_indices), so the same
    (count, seed) recorded in the file names the same images again."""
    return sample_indices(n, min(count, n), seed)


def to_onnx_int8(model: nn.Module, example: torch.Tensor, path, *, calibration: torch.Tensor,
                 calibration_info: Mapping[str, Any] | None = None, test: tuple[torch.Tensor, torch.Tensor] | None = None,
                 verify: bool = True, max_top1_drop: float = INT8_MAX_TOP1_DROP, opset: int = 18,
                 meta: Mapping[str, Any] | None = None, time_batch: int = 64) -> Path:
    """A statically quantized ONNX file: ONNX Runtime quantization, QDQ format, int8 per-channel weights, uint8
    activations with ranges calibrated (min/max) on `calibration` (preprocessed images, e.g. the
    `calibration_subset` of the train split; `calibration_info` records which: split, seed, count).

    Verified on `test` = (images, labels), the whole test split for the CLI: the fp32 export (itself verified against
    eager PyTorch) and the INT8 file both classify it, and the INT8 top-1 may be at most `max_top1_drop` below the
    fp32 one (a logit tolerance means nothing after quantization). Both accuracies, their agreement and the INT8
    speed-up over fp32 ONNX Runtime at batch `time_batch` on this CPU go into the report, the metadata and the sidecar.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not isinstance(calibration, torch.Tensor) or calibration.ndim != example.ndim or len(calibration) == 0:
        raise ExportError(f"INT8 calibration needs a non-empty batch of images shaped like the example "
                          f"{list(example.shape[1:])}, got {getattr(calibration, 'shape', type(calibration).__name__)}")
    if verify and test is None:
        raise ExportError("INT8 verification needs labelled test images (test=(images, labels)): a quantized model is "
                          "judged by its accuracy, not by its logits; pass verify=False to skip it")
    calib = calibration.detach().cpu().float().numpy()
    with _staged(path) as (path, tmp), tempfile.TemporaryDirectory(prefix=".int8-", dir=path.parent) as work:
        fp32 = to_onnx(model, example[:1], Path(work) / "fp32.onnx", opset=opset, meta=meta, verify=verify)
        fp32_props = json.loads(sidecar_path(fp32).read_text())
        pre = Path(work) / "pre.onnx"
        # Folds constants and infers shapes so that every Conv/Gemm gets quantized. Symbolic shape inference fails on
        # some exports (ResNet-9's Reshape) and adds nothing for fixed-size images: ONNX's own inference suffices.
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.batches = iter(calib[i:i + 64] for i in range(0, len(calib), 64))

            def get_next(self):
                b = next(self.batches, None)
                return None if b is None else {"input": b}

        rewritten = _avgpool_as_depthwise_conv(pre)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        quant = {"format": "QDQ", "weights": "int8, per output channel", "activations": "uint8, per tensor",
                 "avgpool_as_depthwise_conv": rewritten,
                 "calibration": {"split": "train", "method": "MinMax", "count": len(calib),
                                 **dict(calibration_info or {})},
                 "onnxruntime": _ort_version()}
        report = None
        if verify:
            report = _verify_int8(fp32, tmp, path.name, test, max_top1_drop, time_batch)
            quant |= {k: report[k] for k in ("top1_fp32", "top1_int8", "speedup_vs_fp32")}
        props = {k: v for k, v in fp32_props.items() if k != "exporter"} | {
            "quantization": quant, "exporter": fp32_props["exporter"] + "+ort-quantize-qdq"}
        _write_onnx_meta(tmp, props)
        onnx.checker.check_model(str(tmp), full_check=True)
        return _atomic_finish(tmp, path, report, props)


def _avgpool_as_depthwise_conv(path: Path) -> int:
    """Rewrite each AveragePool without padding as the depthwise Conv it equals (weights 1/k², group = channels),
    in place; returns how many. Quantized, ORT runs such a Conv as an NHWC QLinearConv, while its QLinearAveragePool
    is NCHW only: with the transposes around it, it took 55% of ConvNet-BN's INT8 time (2-core Xeon, ORT 1.32), and
    leaving the pool in fp32 does not help (ORT fuses DequantizeLinear -> AveragePool -> QuantizeLinear back)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(path))
    shapes = {v.name: v for v in [*m.graph.value_info, *m.graph.input, *m.graph.output]}
    done = 0
    for i, n in enumerate(m.graph.node):
        if n.op_type != "AveragePool" or n.input[0] not in shapes:
            continue
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        dims = shapes[n.input[0]].type.tensor_type.shape.dim
        chans = dims[1].dim_value if len(dims) == 4 else 0
        if not chans or any(a.get("pads", [])) or a.get("ceil_mode", 0) or a.get("auto_pad", b"NOTSET") != b"NOTSET" \
                or any(d != 1 for d in a.get("dilations", [])):
            continue
        k = list(a["kernel_shape"])
        w = numpy_helper.from_array(np.full((chans, 1, *k), 1 / float(np.prod(k)), np.float32), f"{n.name}_dw_weight")
        m.graph.initializer.append(w)
        conv = helper.make_node("Conv", [n.input[0], w.name], list(n.output), name=f"{n.name}_as_dwconv", group=chans,
                                kernel_shape=k, strides=list(a.get("strides", [1] * len(k))))
        m.graph.node.remove(n)
        m.graph.node.insert(i, conv)
        done += 1
    if done:
        onnx.save(m, str(path))
    return done


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _verify_int8(fp32: Path, int8: Path, name: str, test, max_drop: float, time_batch: int) -> dict:
    x, y = test
    y = torch.as_tensor(y).long().cpu()
    if len(x) != len(y) or len(x) == 0:
        raise ExportError(f"INT8 verification: {len(x)} test images but {len(y)} labels")
    runs = {"fp32": Exported(fp32), "int8": Exported(int8)}
    preds = {k: torch.cat([r(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)]) for k, r in runs.items()}
    top1 = {k: float((p == y).float().mean()) for k, p in preds.items()}
    # Speed on this CPU, alternating the two files so that a busy neighbour slows both alike: the CLI says when INT8
    # is the slower one (tiny nets, where quantize/dequantize costs more than the int8 arithmetic saves).
    xb = x[:time_batch].contiguous()
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for r in runs.values():
        r(xb)
    for _ in range(7):
        for k, r in runs.items():
            t = time.perf_counter()
            r(xb)
            times[k].append(time.perf_counter() - t)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    report = {"backend": "onnxruntime", "checks": [], "test_images": len(y), "top1_fp32": top1["fp32"],
              "top1_int8": top1["int8"], "top1_agreement": float((preds["fp32"] == preds["int8"]).float().mean()),
              "max_top1_drop": max_drop, "speedup_vs_fp32": med["fp32"] / med["int8"], "speed_batch": len(xb),
              "cpu": _cpu_name()}
    report["passed"] = top1["int8"] >= top1["fp32"] - max_drop - 1e-12
    if not report["passed"]:
        raise ExportError(f"verification of {name} failed: INT8 top-1 {top1['int8'] * 100:.2f}% is more than "
                          f"{max_drop * 100:.1f} points below fp32's {top1['fp32'] * 100:.2f}% on {len(y)} images")
    return report
