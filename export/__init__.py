"""Export any nn.Module to ONNX or TorchScript, verify it against eager PyTorch, and load it back.

    from export import to_onnx, to_torchscript, load_exported
    to_onnx(model, torch.randn(1, 3, 32, 32), "model.onnx")   # verified; report written beside it
    run = load_exported("model.onnx"); logits = run(batch)

The functions live in zoo (`zoo.artifacts`, `zoo.runtime`): this package is the command line
(`python -m export onnx|torchscript|web`) and their public names, so it depends on zoo and zoo never on it.
"""

from zoo.artifacts import SUPPORTED_OPSETS, contract, to_onnx, to_onnx_int8, to_torchscript, verify_artifact
from zoo.errors import ExportError
from zoo.runtime import EXPORTED_SUFFIXES, Exported, load_exported

__all__ = ["EXPORTED_SUFFIXES", "ExportError", "Exported", "SUPPORTED_OPSETS", "contract", "load_exported", "to_onnx",
           "to_onnx_int8", "to_torchscript", "verify_artifact"]
