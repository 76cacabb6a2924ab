"""zoo: classic small-image CNNs with trained weights, one training engine, one evaluation harness.

    import zoo
    zoo.list_models()                      # every registered network
    model = zoo.load("lenet5_bn")          # trained weights + model.zoo_meta (classes, mean/std, metrics...)
    x = zoo.preprocess_for(model)(pil_image)
    zoo.train("lenet5", "mnist")           # one loop for every model
    zoo.evaluate(model, "mnist")           # one harness for torch / torchscript / onnxruntime
"""

from __future__ import annotations

__version__ = "0.1.0"

from .engine import train
from .errors import ZooError
from .evaluation import evaluate
from .registry import create_model, list_models, register_model
from .transforms import Preprocess, preprocess_for
from .weights import list_pretrained, load


def load_exported(path, device: str = "cpu"):
    """Open an exported model (`.onnx` through ONNX Runtime, with IOBinding on CUDA; `.pt` as TorchScript) as a
    callable: float NCHW tensor -> logits tensor; `.meta` has its classes, mean/std and input size.

    A TorchScript file is code (torch.jit.load runs it): open only files you trust; see SECURITY.md.
    """
    from export import load_exported as _load  # export builds on zoo: imported here, not at zoo's import

    return _load(path, device)


__all__ = ["Preprocess", "ZooError", "create_model", "evaluate", "list_models", "list_pretrained", "load",
           "load_exported", "preprocess_for", "register_model", "train"]
