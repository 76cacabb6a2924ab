"""Test isolation: every session gets its own ZOO_HOME/ZOO_DATA; real data is extracted only when present."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ZOO_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session", autouse=True)
def zoo_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("zoo_home")
    os.environ["ZOO_HOME"] = str(home)
    os.environ["ZOO_DATA"] = str(home / "data")
    os.environ.pop("ZOO_MANIFEST", None)
    os.environ.pop("ZOO_WEIGHTS_URL", None)
    return home


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    """A fresh, empty data cache for one test."""
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def _real(name: str, archive: str, tmp_path_factory):
    path = SHARED / archive
    if not path.exists():
        pytest.skip(f"real dataset archive {path} not present (tests on generated data cover the code path)")
    root = tmp_path_factory.getbasetemp() / "real"
    if not (root / name).is_dir():
        root.mkdir(exist_ok=True)
        with tarfile.open(path) as tf:
            tf.extractall(root, filter="data")
    from zoo.data import ingest

    ingest(name, root / name, progress=False)
    return root / name


@pytest.fixture(scope="session")
def real_mnist(tmp_path_factory, zoo_home):
    return _real("mnist", "mnist-png.tar.gz", tmp_path_factory)


@pytest.fixture(scope="session")
def real_cifar10(tmp_path_factory, zoo_home):
    return _real("cifar10", "cifar10-jpeg.tar.gz", tmp_path_factory)


def run_cli(*args, env=None, check=True, timeout=600) -> subprocess.CompletedProcess:
    e = dict(os.environ, **(env or {}))
    p = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=e, timeout=timeout, cwd=REPO)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


@pytest.fixture
def local_http(monkeypatch):
    """A tests.helpers.LocalHTTP server on 127.0.0.1 for one test (add handlers to `.routes`); proxies are bypassed
    for 127.0.0.1 so no request leaves the machine."""
    from .helpers import LocalHTTP

    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with LocalHTTP({}) as server:
        yield server
