"""Export: self-describing artifacts, verification on by default, atomic output, clear errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

import zoo
from export import ExportError, load_exported, to_onnx, to_torchscript
from zoo.io import UMASK

from .conftest import run_cli
from .helpers import make_cached_split


def test_onnx_metadata_and_report(tmp_path):
    m = zoo.create_model("lenet5_bn").eval()
    m.zoo_meta = {"tag": "lenet5_bn.mnist", "classes": list("0123456789"), "mean": [0.1], "std": [0.3],
                  "sha256": "ab" * 32}
    p = to_onnx(m, torch.zeros(1, 1, 28, 28), tmp_path / "x.onnx")
    props = {x.key: x.value for x in onnx.load(str(p)).metadata_props}
    assert props["tag"] == "lenet5_bn.mnist" and json.loads(props["classes"])[3] == "3"
    assert props["weights_sha256"] == "ab" * 32 and props["layout"] == "NCHW" and props["exporter"] in (
        "dynamo", "torchscript")
    report = json.loads((tmp_path / "x.onnx.verify.json").read_text())
    assert report["passed"] and {c["batch"] for c in report["checks"]} == {1, 256}
    run = load_exported(p)
    assert run.meta["classes"] == list("0123456789") and run.meta["input_size"] == [1, 28, 28]
    ts = to_torchscript(m, torch.zeros(1, 1, 28, 28), tmp_path / "x.pt")
    for f in (p, ts, tmp_path / "x.onnx.verify.json", tmp_path / "x.pt.verify.json"):  # for others to read
        assert f.stat().st_mode & 0o777 == 0o666 & ~UMASK, f


def test_any_module_torchvision(tmp_path):
    import torchvision

    tv = torchvision.models.resnet18(num_classes=4).eval()
    assert to_onnx(tv, torch.zeros(1, 3, 64, 64), tmp_path / "tv.onnx").exists()
    assert to_torchscript(tv, torch.zeros(1, 3, 64, 64), tmp_path / "tv.pt").exists()


class Affine(nn.Module):
    """A module whose forward argument is not called `x`."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, features):
        return self.fc(features)


def test_any_module_gets_the_dynamo_exporter_and_a_dynamic_batch(tmp_path):
    p = to_onnx(Affine().eval(), torch.zeros(1, 4), tmp_path / "a.onnx")
    assert json.loads((tmp_path / "a.onnx.verify.json").read_text())["exporter"] == "dynamo"
    assert load_exported(p)(torch.randn(37, 4)).shape == (37, 3)


class Noisy(nn.Module):
    """Differs between eager and export (a traced constant vs fresh noise): verification must catch it."""

    def forward(self, x):
        return x.flatten(1)[:, :10] + torch.rand(1).item()


def test_failed_verification_leaves_nothing(tmp_path):
    for fn, name in ((to_onnx, "n.onnx"), (to_torchscript, "n.pt")):
        with pytest.raises(ExportError, match="verification"):
            fn(Noisy().eval(), torch.zeros(1, 1, 8, 8), tmp_path / name)
        assert list(tmp_path.iterdir()) == []


def test_export_bad_inputs(tmp_path):
    m = zoo.create_model("mlp2")
    m.train()
    with pytest.warns(UserWarning, match="eval"):
        to_torchscript(m, torch.zeros(1, 1, 28, 28), tmp_path / "m.pt")
    assert not m.training
    with pytest.raises(ExportError, match="opset"):
        to_onnx(m, torch.zeros(1, 1, 28, 28), tmp_path / "m.onnx", opset=7)
    (tmp_path / "file").write_text("")
    for fn, name in ((to_onnx, "m.onnx"), (to_torchscript, "m.pt")):  # a file where the folder should be
        with pytest.raises(ExportError, match=r"output directory .*file.* is not writable"):
            fn(m, torch.zeros(1, 1, 28, 28), tmp_path / "file" / "sub" / name)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os

        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that can write anywhere")
        with pytest.raises(ExportError, match="not writable"):
            to_onnx(m, torch.zeros(1, 1, 28, 28), ro / "m.onnx")
    finally:
        ro.chmod(0o700)


def test_exported_input_checks(tmp_path):
    m = zoo.create_model("mlp2").eval()
    for p in (to_onnx(m, torch.zeros(1, 1, 28, 28), tmp_path / "m.onnx"),
              to_torchscript(m, torch.zeros(1, 1, 28, 28), tmp_path / "m.pt")):
        run = load_exported(p)
        assert run(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
        with pytest.raises(ExportError, match="shape"):
            run(torch.zeros(3, 1, 32, 32))
        with pytest.raises(ExportError, match="float"):
            run(torch.zeros(3, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ExportError, match="does not exist"):
        load_exported(tmp_path / "nope.onnx")


def test_fp16_and_fixed_batch(tmp_path):
    m = zoo.create_model("lenet5").eval()
    p = to_onnx(m, torch.zeros(4, 1, 28, 28), tmp_path / "h.onnx", fp16=True, dynamic_batch=False,
                verify_inputs=[torch.randn(4, 1, 28, 28)])
    assert next(m.parameters()).dtype == torch.float32  # the caller's model is untouched
    assert load_exported(p)(torch.randn(4, 1, 28, 28)).shape == (4, 10)


def test_cli_onnx_and_torchscript(tmp_path):
    for fmt in ("onnx", "torchscript"):
        p = run_cli("-m", "export", fmt, "lenet5.cifar10", "--out", str(tmp_path), "--max-real", "2000")
        assert "wrote" in p.stdout
    assert (tmp_path / "lenet5.cifar10.onnx").exists() and (tmp_path / "lenet5.cifar10.pt.verify.json").exists()
    bad = run_cli("-m", "export", "onnx", "lenet6", "--out", str(tmp_path), check=False)
    assert bad.returncode == 2 and "lenet5" in bad.stderr  # a usage error: the same rc as python -m zoo
    bad = run_cli("-m", "export", "onnx", "lenet5.cifar10", "--opset", "3", check=False)
    assert bad.returncode == 2 and "opset" in bad.stderr
    bad = run_cli("-m", "export", "onnx", "lenet5.cifar10", "--batch", "0", check=False)
    assert bad.returncode == 2 and "--batch must be 'dynamic' or a positive integer" in bad.stderr


def test_max_real_is_a_sample_across_classes(data_home):
    """Ingested splits are class-sorted: --max-real N must verify on a spread sample, not the first N images."""
    from export.__main__ import real_inputs

    split = make_cached_split("cifar10", n=600, split="test")
    order = np.argsort(split.labels, kind="stable")  # rewrite the split class-sorted, as ingest leaves it
    images, labels = np.array(split.images[order]), np.array(split.labels[order])
    del split
    np.save(data_home / "cifar10" / "test" / "images.npy", images)
    np.save(data_home / "cifar10" / "test" / "labels.npy", labels)
    real_inputs.cache_clear()
    x = torch.cat(real_inputs("cifar10", 100))
    real_inputs.cache_clear()
    assert x.shape == (100, 3, 32, 32)
    ref = zoo.data.open_split("cifar10", "test")
    idx = zoo.data.sample_indices(len(ref), 100)
    assert len(set(ref.labels[idx].tolist())) == 10  # every class is represented
    first = next(iter(zoo.data.Loader(ref, 600, augment=None, shuffle=False)))[0]
    torch.testing.assert_close(x, first[idx])
    bad = run_cli("-m", "export", "onnx", "lenet5.cifar10", "--max-real", "0", check=False)
    assert bad.returncode == 2 and "--max-real" in bad.stderr
