"""zoo: classic small-image CNNs with trained weights, one training engine, one evaluation harness.

    import zoo
    zoo.list_models()                      # every registered network
    model = zoo.load("lenet5_bn")          # trained weights + model.zoo_meta (classes, mean/std, metrics...)
    x = zoo.preprocess_for(model)(pil_image)
    zoo.train("lenet5", "mnist")           # one loop for every model
    zoo.evaluate(model, "mnist")           # one harness for torch / torchscript / onnxruntime
"""

from __future__ import annotations

from . import models  # noqa: F401  (importing the families registers every model)
from ._version import __version__  # noqa: F401  (zoo.__version__)
from .engine import train
from .errors import ZooError
from .evaluation import evaluate
from .pretrained import create_model, load
from .registry import list_models, register_model
from .runtime import load_exported
from .transforms import Preprocess, preprocess_for
from .weights import list_pretrained

__all__ = ["Preprocess", "ZooError", "create_model", "evaluate", "list_models", "list_pretrained", "load",
           "load_exported", "preprocess_for", "register_model", "train"]
