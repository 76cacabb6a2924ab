"""Datasets: offline readers, the decode-once cache, and loaders."""

from .cache import data_home, ingest, open_split
from .loaders import BACKENDS, Loader, loader, sample_indices
from .native import Augment
from .specs import DATASETS, dataset_spec

__all__ = ["Augment", "BACKENDS", "DATASETS", "Loader", "data_home", "dataset_spec", "ingest", "loader", "open_split",
           "sample_indices"]
