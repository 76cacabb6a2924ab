"""Model families. Importing this package registers every entrypoint."""

from . import convnet, lenet, mlp, resnet  # noqa: F401
from .base import ZooModel

__all__ = ["ZooModel"]
