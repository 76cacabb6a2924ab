"""Static facts about the supported datasets (no I/O, cheap to import)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ZooError, suggest

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
MNIST_CLASSES = tuple(str(i) for i in range(10))
# The official meta file's fine_label_names, in its (alphabetical) order; the shipped CIFAR-100 weights use it.
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
    "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    in_chans: int
    img_size: int
    num_classes: int
    splits: tuple[str, ...]
    classes: tuple[str, ...] | None = None  # the published class names, in label order
    has_val: bool = False  # ships its own validation split (CINIC-10's "valid")
    hflip: bool = True  # a mirrored image keeps its label (False for digits: flips are off in training and TTA)
    # Images per split as published: ingest under the canonical name checks them, so a partial copy (an
    # interrupted extraction, one batch file short) cannot be cached, trained and published as the real thing.
    sizes: tuple[tuple[str, int], ...] = ()

    def split_size(self, split: str) -> int | None:
        return dict(self.sizes).get(split)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", 1, 28, 10, ("train", "test"), MNIST_CLASSES, hflip=False,
                         sizes=(("train", 60000), ("test", 10000))),
    "cifar10": DatasetSpec("cifar10", 3, 32, 10, ("train", "test"), CIFAR10_CLASSES,
                           sizes=(("train", 50000), ("test", 10000))),
    "cifar100": DatasetSpec("cifar100", 3, 32, 100, ("train", "test"), CIFAR100_CLASSES,
                            sizes=(("train", 50000), ("test", 10000))),
    "cinic10": DatasetSpec("cinic10", 3, 32, 10, ("train", "valid", "test"), CIFAR10_CLASSES, has_val=True,
                           sizes=(("train", 90000), ("valid", 90000), ("test", 90000))),
    # STL-10's 100,000 unlabeled images are not ingested (no split reads them).
    "stl10": DatasetSpec("stl10", 3, 96, 10, ("train", "test"), STL10_CLASSES, sizes=(("train", 5000), ("test", 8000))),
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
