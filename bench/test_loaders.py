"""Loader throughput: CIFAR-10 train, crop(pad 4) + flip + normalize, batch 512, all backends in one run.

The `torch` backend (torchvision transforms per sample, 2 workers) is the reference; every other
backend records its ratio to it in extra_info, and the `ffcv` case the native loader's ratio to FFCV
(`native_vs_ffcv`, measured in the same run; the test command installs FFCV where it can).
"""

from __future__ import annotations

import importlib.util
import itertools

import pytest
import torch

from zoo.data import Loader

from .conftest import QUICK, throughput

BATCH = 512
_ref: dict[str, float] = {}


def epoch_fn(ld: Loader, max_batches: int | None):
    def run():
        for _ in itertools.islice(ld, max_batches):
            pass

    return run


def n_images(ld: Loader, max_batches: int | None) -> int:
    return min(len(ld), max_batches or len(ld)) * BATCH


@pytest.mark.parametrize("backend", ["torch", "native", "native_uint8", "gpu_on_cpu", "ffcv", "gpu"])
def test_loader_throughput(benchmark, cifar_like, backend):
    device, kw = "cpu", {}
    if backend == "ffcv" and importlib.util.find_spec("ffcv") is None:
        pytest.skip("ffcv not installed (pip install 'zoo[ffcv]')")
    if backend == "gpu":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device")
        device = "cuda"
    name = {"native_uint8": "native", "gpu_on_cpu": "gpu"}.get(backend, backend)
    if backend == "native_uint8":
        kw["uint8"] = True
    ld = Loader(cifar_like, BATCH, augment="crop_flip", shuffle=True, drop_last=True, backend=name, device=device, **kw)
    # Whole epochs, so DataLoader worker start-up is amortised as in training; quick mode (CI) takes a slice.
    max_batches = 4 if QUICK and backend in ("torch", "ffcv") else None
    sync = torch.cuda.synchronize if device == "cuda" else None
    ips = throughput(benchmark, epoch_fn(ld, max_batches), n_images(ld, max_batches), sync=sync,
                     rounds=1 if backend == "torch" else None)
    if backend in ("torch", "native"):
        _ref[backend] = ips
    if "torch" in _ref:
        benchmark.extra_info["ratio_vs_torch"] = ips / _ref["torch"]
    if backend == "ffcv" and "native" in _ref:  # the project's own loader against the one it is compared with
        benchmark.extra_info["native_vs_ffcv"] = _ref["native"] / ips
    benchmark.extra_info["backend"] = backend


def test_ingest_time(benchmark, tmp_path_factory):
    """Decode of an ImageFolder tree of JPEGs into the cache (real CIFAR-10 when extracted, else generated)."""
    import os
    from pathlib import Path

    from zoo.data import ingest

    root = Path(os.environ.get("ZOO_BENCH_CIFAR_ROOT", ".cache/datasets/cifar10"))
    if not (root / "train").is_dir():
        from tests.helpers import write_image_folder

        root = tmp_path_factory.mktemp("jpeg")
        write_image_folder(root, n_per_class=50 if QUICK else 500, size=32, fmt="JPEG")
    n = sum(1 for _ in root.rglob("*.jpg")) + sum(1 for _ in root.rglob("*.png"))
    home = tmp_path_factory.mktemp("home")

    def run():
        os.environ["ZOO_DATA"] = str(home)
        try:
            ingest("bench_ingest", root, force=True, progress=False)
        finally:
            del os.environ["ZOO_DATA"]

    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=1)
    os.environ["ZOO_DATA"] = str(home)
    try:  # the timed ingest decoded every image of the tree
        from zoo.data import open_split

        assert sum(len(open_split("bench_ingest", s)) for s in ("train", "test")) == n
    finally:
        del os.environ["ZOO_DATA"]
    benchmark.extra_info["images"] = n
    benchmark.extra_info["images_per_s"] = n / benchmark.stats.stats.median
