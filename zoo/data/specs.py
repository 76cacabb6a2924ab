"""Static facts about the supported datasets (no I/O, cheap to import)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ZooError, suggest

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
MNIST_CLASSES = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    in_chans: int
    img_size: int
    num_classes: int
    splits: tuple[str, ...]
    classes: tuple[str, ...] | None = None  # None: read from the source (CIFAR-100, ImageFolder)
    has_val: bool = False  # ships its own validation split (CINIC-10's "valid")
    hflip: bool = True  # a mirrored image keeps its label (False for digits: flips are off in training and TTA)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", 1, 28, 10, ("train", "test"), MNIST_CLASSES, hflip=False),
    "cifar10": DatasetSpec("cifar10", 3, 32, 10, ("train", "test"), CIFAR10_CLASSES),
    "cifar100": DatasetSpec("cifar100", 3, 32, 100, ("train", "test")),
    "cinic10": DatasetSpec("cinic10", 3, 32, 10, ("train", "valid", "test"), CIFAR10_CLASSES, has_val=True),
    "stl10": DatasetSpec("stl10", 3, 96, 10, ("train", "test"), STL10_CLASSES),
}


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ZooError(f"unknown dataset {name!r}; {suggest(name, DATASETS)}") from None


def flips_keep_labels(name: str, in_chans: int) -> bool:
    """Whether horizontal flips are label-preserving for a dataset (unknown datasets: colour ones are)."""
    spec = DATASETS.get(name)
    return spec.hflip if spec else in_chans == 3
