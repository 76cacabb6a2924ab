"""The decode-once cache: atomic, concurrent-safe, invalidated by a changed source."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from zoo.data import ingest, open_split
from zoo.errors import ZooError

from .helpers import write_cifar10, write_image_folder, write_mnist, write_stl10


def test_ingest_mnist_and_reuse(tmp_path, data_home):
    truth = write_mnist(tmp_path / "mnist")
    out = ingest("mnist", tmp_path / "mnist", progress=False)
    assert set(out) == {"train", "test"}
    s = open_split("mnist", "train")
    assert isinstance(s.images, np.memmap) and s.images.shape == (200, 28, 28, 1)
    assert np.array_equal(s.images[..., 0], truth["train"][0])
    meta = json.loads((out["train"] / "meta.json").read_text())
    assert len(meta["mean"]) == 1 and abs(meta["mean"][0] - truth["train"][0].mean() / 255) < 1e-5
    mtime = (out["train"] / "images.npy").stat().st_mtime_ns
    ingest("mnist", tmp_path / "mnist", progress=False)  # current: not rebuilt
    assert (out["train"] / "images.npy").stat().st_mtime_ns == mtime
    assert open_split("mnist", "test").norm == (meta["mean"], meta["std"])  # train statistics


def test_changed_source_rebuilds(tmp_path, data_home):
    write_image_folder(tmp_path / "src", n_per_class=2, classes=["a", "b"])
    ingest("tiny", tmp_path / "src", progress=False)
    assert len(open_split("tiny", "train")) == 4
    write_image_folder(tmp_path / "src", n_per_class=3, classes=["a", "b"])
    ingest("tiny", tmp_path / "src", progress=False)
    assert len(open_split("tiny", "train")) == 6


def test_failed_ingest_leaves_nothing(tmp_path, data_home):
    write_image_folder(tmp_path / "src", n_per_class=2, classes=["a", "b"], splits=["train"])
    (tmp_path / "src" / "train" / "a" / "0000.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(ZooError, match="0000.png"):
        ingest("broken", tmp_path / "src", progress=False)
    assert not (data_home / "broken" / "train").exists()
    leftovers = list((data_home / "broken").iterdir()) if (data_home / "broken").exists() else []
    assert not [p for p in leftovers if p.name.startswith(".train")]


def test_concurrent_ingest(tmp_path, data_home):
    write_image_folder(tmp_path / "src", n_per_class=20, classes=["a", "b", "c"], fmt="JPEG")
    code = f"from zoo.data import ingest; ingest('race', {str(tmp_path / 'src')!r}, progress=False, force=True)"
    env = dict(os.environ, ZOO_DATA=str(data_home))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    s = open_split("race", "train")
    assert len(s) == 60 and s.images.shape == (60, 32, 32, 3)
    assert not [p for p in (data_home / "race").iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_cifar_pickles_stl_and_not_ingested(tmp_path, data_home):
    write_cifar10(tmp_path / "c10")
    ingest("cifar10", tmp_path / "c10", progress=False)
    assert open_split("cifar10", "test").classes[9] == "truck"
    write_stl10(tmp_path / "stl")
    ingest("stl10", tmp_path / "stl", progress=False, resize=32)
    assert open_split("stl10", "train").images.shape == (20, 32, 32, 3)
    with pytest.raises(ZooError, match="python -m zoo ingest cinic10"):
        open_split("cinic10", "train")
    with pytest.raises(ZooError, match="does not exist"):
        ingest("mnist", tmp_path / "nowhere")


def test_cinic_style_valid_split(tmp_path, data_home):
    from .helpers import CLASSES10

    write_image_folder(tmp_path / "cinic", n_per_class=1, classes=CLASSES10, splits=("train", "valid", "test"))
    assert set(ingest("cinic10", tmp_path / "cinic", progress=False)) == {"train", "valid", "test"}
    assert len(open_split("cinic10", "valid")) == 10


def test_wrong_tree_or_option_fails_before_decoding(tmp_path, data_home, monkeypatch):
    from zoo.data import native

    write_image_folder(tmp_path / "c10", n_per_class=1)  # CIFAR-10 class folders
    monkeypatch.setattr(native, "decode_files", lambda *a, **k: pytest.fail("decoded a tree it should refuse"))
    with pytest.raises(ZooError, match=r"mnist classes \['airplane'.*differ from the canonical \['0'"):
        ingest("mnist", tmp_path / "c10", progress=False)
    with pytest.raises(ZooError, match="--resize applies to STL-10 only"):
        ingest("cifar10", tmp_path / "c10", progress=False, resize=16)
    assert not (data_home / "mnist" / "train").exists() and not (data_home / "cifar10" / "train").exists()
