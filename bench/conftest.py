"""Shared fixtures for the benchmark suites: real data when ingested, otherwise generated data."""

from __future__ import annotations

import os

import pytest

QUICK = os.environ.get("ZOO_BENCH_QUICK") == "1"  # CI: few rounds, small sizes, so the suites never rot


def pytest_benchmark_update_machine_info(config, machine_info):
    """Versions and the GPU go into every result file, so a published table can say what it was measured with.
    ZOO_COMMIT names the commit where the tree has no .git (the GPU machine gets a copy of the working tree)."""
    import importlib.metadata as md

    import torch

    versions = {}
    for pkg in ("torch", "torchvision", "onnxruntime", "onnxruntime-gpu", "numpy", "zoo"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    machine_info["versions"] = versions
    if torch.cuda.is_available():
        machine_info["gpu"] = torch.cuda.get_device_name(0)
        machine_info["cuda"] = torch.version.cuda
    if os.environ.get("ZOO_COMMIT"):
        machine_info["zoo_commit"] = os.environ["ZOO_COMMIT"]


def pytest_configure(config):
    import torch

    # Fixed shapes in every benchmark: cuDNN times its conv algorithms during warm-up and keeps the fastest.
    torch.backends.cudnn.benchmark = True


@pytest.fixture(scope="session")
def cifar_like(tmp_path_factory):
    """The ingested CIFAR-10 train split if present, else a generated split of the same shape. The generated one
    lives in a temporary cache: a benchmark run must not add a fake dataset to the user's own."""
    from zoo.data import open_split
    from zoo.errors import ZooError

    try:
        return open_split("cifar10", "train")
    except ZooError:
        from tests.helpers import make_cached_split

        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ZOO_DATA", str(tmp_path_factory.mktemp("bench_data")))
            return make_cached_split("bench_cifar", n=4096 if QUICK else 50000, size=32, chans=3)


def throughput(benchmark, fn, items: int, *, sync=None, rounds: int | None = None, warmup: int = 1) -> float:
    """Benchmark fn (which processes `items` images), record img/s in extra_info, return it."""
    sync = sync or (lambda: None)

    def run():
        fn()
        sync()

    for _ in range(warmup):
        run()
    benchmark.pedantic(run, rounds=rounds or (2 if QUICK else 5), iterations=1)
    ips = items / benchmark.stats.stats.median
    benchmark.extra_info["images_per_s"] = ips
    return ips
