"""Running exported models: an ONNX file through ONNX Runtime (IOBinding on CUDA) or a TorchScript file, as one
callable with the metadata it carries. Everything that runs artifacts lives here, so the export CLI (`export/`)
builds on zoo and zoo never imports it.

A TorchScript file is code (torch.jit.load runs it); an ONNX file is data, checked before ONNX Runtime opens it
(its external-data files must lie in its own folder). See SECURITY.md.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import ExportError, ZooError
from .io import contained

EXPORTED_SUFFIXES = (".onnx", ".pt", ".ts")  # what load_exported opens (anything but .onnx is TorchScript)
# Contract values that are not strings (zoo.artifacts.contract): JSON-encoded once in ONNX metadata_props, which hold
# strings only; plain JSON values in TorchScript's zoo_meta.json and the sidecar. Files written before the contract
# JSON-encoded classes/mean/std/input_size in zoo_meta.json too: decoded the same way.
JSON_KEYS = ("classes", "mean", "std", "input_size", "pixel_scale", "resize", "quantization")


class Exported:
    """Callable over an exported artifact: float NCHW tensor -> logits tensor (on the input's device)."""

    def __init__(self, path: Path, device: str = "cpu"):
        self.path, self.device = Path(path), device
        try:
            torch.device(device)  # 'bogus' or 5: one error here, not a silent CPU run or a later traceback
        except (RuntimeError, TypeError) as e:
            raise ExportError(f"device {device!r}: {e}") from None
        if not self.path.exists():
            raise ExportError(f"exported model {self.path} does not exist")
        if self.path.suffix == ".onnx":
            import onnxruntime as ort

            _check_external_data(self.path)

            providers = ["CPUExecutionProvider"]
            if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            try:
                self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
            except Exception as e:
                raise ExportError(f"{self.path}: ONNX Runtime cannot load it: {e}") from None
            self.providers = self.session.get_providers()
            inp = self.session.get_inputs()[0]
            self.input_name, self.input_shape = inp.name, inp.shape
            self.output_name = self.session.get_outputs()[0].name  # "logits" for ours; any name for other files
            self.input_dtype = torch.float16 if "float16" in inp.type else torch.float32
            self.meta = {p: v for p, v in self.session.get_modelmeta().custom_metadata_map.items()}
            self.kind = "onnxruntime"
        else:
            files = {"zoo_meta.json": ""}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notice
                    self.module = torch.jit.load(str(self.path), map_location=device, _extra_files=files)
            except Exception as e:
                raise ExportError(f"{self.path}: not a loadable TorchScript file: {e}") from None
            try:
                self.meta = json.loads(files["zoo_meta.json"] or "{}")
                if not isinstance(self.meta, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                raise ExportError(f"{self.path}: its zoo_meta.json is not a JSON object: {e}") from None
            self.input_dtype = torch.float32
            self.kind = "torchscript"
        for k in JSON_KEYS:
            if isinstance(self.meta.get(k), str):
                try:
                    self.meta[k] = json.loads(self.meta[k])
                except ValueError:
                    raise ExportError(f"{self.path}: metadata {k!r} is not valid JSON: {self.meta[k]!r}") from None
        if self.kind == "torchscript":
            self.input_shape = [None, *self.meta["input_size"]] if self.meta.get("input_size") else None

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ExportError(f"{self.path}: input must be a float tensor, got "
                              f"{getattr(x, 'dtype', type(x).__name__)}")
        want = self.input_shape
        if want and (x.ndim != len(want) or any(isinstance(w, int) and w != s for w, s in zip(want, x.shape))):
            raise ExportError(f"{self.path}: input shape {list(x.shape)} does not match the model's {list(want)}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if self.kind == "torchscript":
            return self.module(x.float())
        x = x.to(self.input_dtype).contiguous()
        if x.is_cuda and "CUDAExecutionProvider" in self.providers:
            io = self.session.io_binding()  # zero-copy: ORT reads and writes device memory directly
            io.bind_input(self.input_name, "cuda", 0, np.float16 if self.input_dtype == torch.float16 else np.float32,
                          list(x.shape), x.data_ptr())
            io.bind_output(self.output_name, "cuda")
            self.session.run_with_iobinding(io)
            return torch.from_dlpack(io.get_outputs()[0]).float() if hasattr(io.get_outputs()[0], "__dlpack__") \
                else torch.from_numpy(io.copy_outputs_to_cpu()[0]).to(x.device).float()
        out = self.session.run(None, {self.input_name: x.cpu().numpy()})[0]
        return torch.from_numpy(out).float().to(x.device)


def _check_external_data(path: Path) -> None:
    """An ONNX file may keep tensors in other files, named inside it: refuse any that would make the runtime read a
    file outside the model's folder (an absolute path, '..', a symlink out) before ONNX Runtime opens it."""
    import onnx  # heavy: only when an ONNX file is opened

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: not an ONNX file at all
        raise ExportError(f"{path}: not a readable ONNX file: {e}") from None
    for t in _all_tensors(proto.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in t.external_data if e.key == "location"), "")
            try:
                contained(path.parent, location, what=f"{path}: external data of tensor {t.name!r}:")
            except ZooError as e:
                raise ExportError(str(e)) from None


def _all_tensors(graph):
    """Every tensor a graph stores: initializers (dense and sparse), node attributes, and those of subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_tensors(g)


def load_exported(path, device: str = "cpu") -> Exported:
    """Open an exported model (`.onnx` through ONNX Runtime, with IOBinding on CUDA; `.pt`/`.ts` as TorchScript) as
    a callable: float NCHW tensor -> logits tensor; `.meta` has its classes, mean/std and input size.

    A TorchScript file is code (torch.jit.load runs it): open only files you trust; see SECURITY.md.
    """
    return Exported(Path(path), device)
