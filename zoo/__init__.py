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

from .errors import ZooError
from .registry import create_model, list_models, register_model
from .transforms import Preprocess, preprocess_for
from .weights import list_pretrained, load


def train(*args, **kwargs):
    from .engine import train as _train

    return _train(*args, **kwargs)


train.__doc__ = "See zoo.engine.train."


def evaluate(*args, **kwargs):
    from .evaluation import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


evaluate.__doc__ = "See zoo.evaluation.evaluate."


def load_exported(path, device: str = "cpu"):
    """An ONNX Runtime session (IOBinding on CUDA) or TorchScript module as a callable, with its metadata."""
    from export import load_exported as _load

    return _load(path, device)


__all__ = ["Preprocess", "ZooError", "create_model", "evaluate", "list_models", "list_pretrained", "load",
           "load_exported", "preprocess_for", "register_model", "train"]
