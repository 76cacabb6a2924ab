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

CONTRACT_KEYS = {"schema", "tag", "dataset", "classes", "input_size", "layout", "dtype", "channel_order", "pixel_scale",
                 "mean", "std", "resize", "output", "zoo_version", "sha256", "exporter"}


def test_onnx_metadata_and_report(tmp_path):
    m = zoo.create_model("lenet5_bn").eval()
    m.zoo_meta = {"tag": "lenet5_bn.mnist", "classes": list("0123456789"), "mean": [0.1], "std": [0.3],
                  "sha256": "ab" * 32}
    p = to_onnx(m, torch.zeros(1, 1, 28, 28), tmp_path / "x.onnx")
    proto = onnx.load(str(p))
    props = {x.key: x.value for x in proto.metadata_props}
    assert set(props) == CONTRACT_KEYS
    # Strings stay strings; lists, numbers and objects are JSON-encoded once (metadata_props hold strings only).
    assert props["tag"] == "lenet5_bn.mnist" and json.loads(props["classes"])[3] == "3"
    assert props["sha256"] == "ab" * 32 and props["layout"] == "NCHW" and props["exporter"] in ("dynamo", "torchscript")
    assert props["channel_order"] == "L" and props["output"] == "logits" and props["dtype"] == "float32"
    assert json.loads(props["pixel_scale"]) == 1 / 255 and json.loads(props["input_size"]) == [1, 28, 28]
    assert json.loads(props["resize"]) == {"interpolation": "bilinear", "antialias": True, "align_corners": False,
                                           "size": [28, 28]}
    assert "scaled by 1/255" in proto.doc_string and "(x - mean) / std" in proto.doc_string
    report = json.loads((tmp_path / "x.onnx.verify.json").read_text())
    assert report["passed"] and {c["batch"] for c in report["checks"]} == {1, 256}
    run = load_exported(p)
    assert run.meta["classes"] == list("0123456789") and run.meta["input_size"] == [1, 28, 28]
    assert run.meta["pixel_scale"] == 1 / 255 and run.meta["mean"] == [0.1]
    ts = to_torchscript(m, torch.zeros(1, 1, 28, 28), tmp_path / "x.pt")
    files = {"zoo_meta.json": ""}
    torch.jit.load(str(ts), _extra_files=files)
    ts_meta = json.loads(files["zoo_meta.json"])  # one JSON object of plain values, not JSON inside JSON
    assert ts_meta["classes"] == list("0123456789") and ts_meta["mean"] == [0.1] and ts_meta["dtype"] == "float32"
    onnx_meta = json.loads((tmp_path / "x.onnx.json").read_text())  # the sidecar: the ONNX metadata, decoded
    assert onnx_meta == {k: v if k in ("tag", "dataset", "layout", "dtype", "channel_order", "output", "zoo_version",
                                       "sha256", "exporter", "schema") else json.loads(v) for k, v in props.items()}
    assert json.loads((tmp_path / "x.pt.json").read_text()) == ts_meta
    assert {k: v for k, v in ts_meta.items() if k != "exporter"} == {
        k: v for k, v in onnx_meta.items() if k != "exporter"}  # the same contract in both formats
    assert load_exported(ts).meta == ts_meta
    for f in (p, ts, tmp_path / "x.onnx.verify.json", tmp_path / "x.pt.verify.json", tmp_path / "x.onnx.json",
              tmp_path / "x.pt.json"):  # for others to read
        assert f.stat().st_mode & 0o777 == 0o666 & ~UMASK, f


def test_contract_reads_any_mapping():
    """zoo_meta may be a read-only Mapping: the contract reads it with [] and .get only."""
    from types import MappingProxyType

    from zoo.artifacts import contract

    c = contract(MappingProxyType({"tag": "t.cifar10", "classes": ("a", "b"), "mean": (0.5, 0.5, 0.5),
                                   "std": (0.25, 0.25, 0.25)}), (1, 3, 32, 32))
    assert c["classes"] == ["a", "b"] and c["mean"] == [0.5] * 3 and c["channel_order"] == "RGB"
    assert c["input_size"] == [3, 32, 32] and c["sha256"] == "" and c["resize"]["size"] == [32, 32]
    assert json.loads(json.dumps(c)) == c  # plain JSON values only
    assert contract(None, (1, 1, 8, 8), name="Net")["tag"] == "Net"


def test_files_with_the_old_double_encoded_metadata_still_load(tmp_path):
    """Exports written before the contract: TorchScript's zoo_meta.json held JSON strings inside JSON, ONNX had
    weights_sha256 and no pixel_scale."""
    m = zoo.create_model("mlp2").eval()
    old = {"tag": "mlp2.mnist", "dataset": "mnist", "classes": json.dumps(list("0123456789")),
           "mean": json.dumps([0.13]), "std": json.dumps([0.31]), "input_size": json.dumps([1, 28, 28]),
           "layout": "NCHW", "weights_sha256": "", "exporter": "torchscript-script+freeze"}
    ts = torch.jit.freeze(torch.jit.script(m))
    torch.jit.save(ts, str(tmp_path / "old.pt"), _extra_files={"zoo_meta.json": json.dumps(old)})
    run = load_exported(tmp_path / "old.pt")
    assert run.meta["classes"] == list("0123456789") and run.meta["input_size"] == [1, 28, 28]
    assert run(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    p = to_onnx(m, torch.zeros(1, 1, 28, 28), tmp_path / "old.onnx", verify=False)
    proto = onnx.load(str(p))
    del proto.metadata_props[:]
    for k, v in old.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(p))
    assert load_exported(p).meta["mean"] == [0.13]
    torch.jit.save(ts, str(tmp_path / "bad.pt"), _extra_files={"zoo_meta.json": "[1, 2]"})
    with pytest.raises(ExportError, match=r"bad\.pt: its zoo_meta\.json is not a JSON object"):
        load_exported(tmp_path / "bad.pt")


class Tiny(nn.Module):
    """Class 1 iff the second feature is positive, by a weight difference of 0.001: int8 weights (per channel,
    scale max|w|/127) round it to 0, so the quantized model ties and says class 0 for every input."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [1.0, 0.001, 0, 0]]))

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_int8_api_records_calibration_and_accuracy(tmp_path):
    from zoo.artifacts import to_onnx_int8

    m = zoo.load("lenet5_bn.cifar10")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, 32, 32, generator=g)
    y = m(x).argmax(1).detach()  # labels the fp32 model gets right: top-1 1.0
    p = to_onnx_int8(m, torch.zeros(1, 3, 32, 32), tmp_path / "q.int8.onnx", calibration=x[:128], test=(x, y),
                     calibration_info={"seed": 7, "count": 128}, max_top1_drop=0.05)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["q.int8.onnx", "q.int8.onnx.json",
                                                          "q.int8.onnx.verify.json"]  # no temporary file left
    report = json.loads((tmp_path / "q.int8.onnx.verify.json").read_text())
    assert report["top1_fp32"] == 1.0 and report["top1_int8"] >= 0.95 and report["passed"]
    assert report["test_images"] == 300 and report["speedup_vs_fp32"] > 0 and report["speed_batch"] == 64
    side = json.loads((tmp_path / "q.int8.onnx.json").read_text())
    assert set(side) == CONTRACT_KEYS | {"quantization"} and side["tag"] == "lenet5_bn.cifar10"
    q = side["quantization"]
    assert q["format"] == "QDQ" and q["calibration"] == {"split": "train", "method": "MinMax", "count": 128, "seed": 7}
    assert q["top1_int8"] == report["top1_int8"] and side["exporter"].endswith("+ort-quantize-qdq")
    ops = {n.op_type for n in onnx.load(str(p)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    run = load_exported(p)
    assert run.meta["quantization"]["calibration"]["seed"] == 7 and run(x[:5]).shape == (5, 10)
    for f in tmp_path.iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~UMASK, f


def test_int8_that_loses_accuracy_is_refused_and_leaves_nothing(tmp_path):
    from zoo.artifacts import to_onnx_int8

    x = torch.randn(400, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    y = (x.flatten(1)[:, 1] > 0).long()
    with pytest.raises(ExportError, match=r"verification of .*q\.onnx failed: INT8 top-1 .* more than 0\.3 points "
                                          r"below fp32's 100\.00% on 400 images"):
        to_onnx_int8(Tiny().eval(), torch.zeros(1, 1, 2, 2), tmp_path / "q.onnx", calibration=x, test=(x, y))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ExportError, match="needs labelled test images"):
        to_onnx_int8(Tiny().eval(), torch.zeros(1, 1, 2, 2), tmp_path / "q.onnx", calibration=x)
    with pytest.raises(ExportError, match="calibration needs a non-empty batch"):
        to_onnx_int8(Tiny().eval(), torch.zeros(1, 1, 2, 2), tmp_path / "q.onnx", calibration=x[:0], test=(x, y))
    assert list(tmp_path.iterdir()) == []


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
    assert bad.returncode == 2 and "--batch must be 'dynamic' or an integer in 1..65536" in bad.stderr


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


def test_cli_int8_errors(tmp_path, data_home):
    bad = run_cli("-m", "export", "onnx", "lenet5_bn.cifar10", "--int8", "--fp16", "--out", str(tmp_path), check=False)
    assert bad.returncode == 2 and "--int8 quantizes the fp32 model with a dynamic batch" in bad.stderr
    bad = run_cli("-m", "export", "onnx", "lenet5_bn.cifar10", "--int8", "--out", str(tmp_path), check=False,
                  env={"ZOO_DATA": str(data_home)})
    assert bad.returncode == 2 and "--int8 calibrates on cifar10's train split, which is not ingested" in bad.stderr
    assert not (tmp_path / "lenet5_bn.cifar10.int8.onnx").exists()


@pytest.mark.realdata
def test_cli_int8_on_real_cifar10(tmp_path, real_cifar10):
    p = run_cli("-m", "export", "onnx", "lenet5_bn.cifar10", "--int8", "--out", str(tmp_path))
    q = tmp_path / "lenet5_bn.cifar10.int8.onnx"
    assert f"wrote {q} (INT8, verified: top-1 " in p.stdout and "on 10000 test images" in p.stdout
    r = json.loads((tmp_path / "lenet5_bn.cifar10.int8.onnx.verify.json").read_text())
    assert r["passed"] and r["top1_int8"] >= r["top1_fp32"] - 0.003 and r["test_images"] == 10000
    assert ("INT8 is slower than fp32 here" in p.stdout) == (r["speedup_vs_fp32"] < 1)
    side = json.loads((tmp_path / "lenet5_bn.cifar10.int8.onnx.json").read_text())
    cal = side["quantization"]["calibration"]
    assert cal["split"] == "train" and cal["seed"] == 0 and cal["count"] == 512 and "sample_indices" in cal["indices"]
    assert side["quantization"]["top1_int8"] == r["top1_int8"]
    for f in tmp_path.glob("lenet5_bn.cifar10.int8.onnx*"):
        assert f.stat().st_mode & 0o777 == 0o666 & ~UMASK, f
    ev = run_cli("-m", "zoo", "eval", str(q), "--out", str(tmp_path / "rep"))  # runs like any exported file
    assert f"top-1 {r['top1_int8'] * 100:.2f}%" in ev.stdout and "[onnxruntime, cpu]" in ev.stdout


def test_cli_web_folder(tmp_path, monkeypatch):
    from export.__main__ import ORT_WEB_FILES

    dist = tmp_path / "dist"
    dist.mkdir()
    for f in ORT_WEB_FILES:
        (dist / f).write_text(f"// {f}")
    out = tmp_path / "site"
    p = run_cli("-m", "export", "web", "lenet5_bn.cifar10", "--out", str(out), env={"ZOO_ORT_WEB": str(dist)})
    assert f"wrote {out}/" in p.stdout
    assert sorted(f.name for f in out.iterdir()) == sorted(["index.html", "model.onnx", "model.onnx.json",
                                                            *ORT_WEB_FILES])  # nothing temporary left
    assert sorted(f.name for f in tmp_path.iterdir()) == ["dist", "site"]
    html = (out / "index.html").read_text()
    assert '<script src="ort.wasm.min.js"></script>' in html and 'fetch("model.onnx.json")' in html
    assert json.loads((out / "model.onnx.json").read_text())["classes"][0] == "airplane"
    assert out.stat().st_mode & 0o777 == 0o777 & ~UMASK
    for f in out.iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~UMASK, f
    bad = run_cli("-m", "export", "web", "lenet5_bn.cifar10", "--out", str(tmp_path / "x"), check=False,
                  env={"ZOO_ORT_WEB": str(tmp_path / "nope")})
    assert bad.returncode == 2 and "ONNX Runtime Web not found" in bad.stderr
    assert "npm install --prefix .cache/node onnxruntime-web@1.30.0" in bad.stderr and not (tmp_path / "x").exists()
    (tmp_path / "file").write_text("")
    bad = run_cli("-m", "export", "web", "lenet5_bn.cifar10", "--out", str(tmp_path / "file"), check=False,
                  env={"ZOO_ORT_WEB": str(dist)})
    assert bad.returncode == 2 and "--out" in bad.stderr and "Traceback" not in bad.stderr


class Pooled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.pool, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.AvgPool2d(2), nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def test_int8_average_pool_becomes_an_exact_depthwise_conv(tmp_path):
    """ORT runs a quantized AveragePool slowly (NCHW only): INT8 files carry the depthwise Conv it equals."""
    from zoo.artifacts import _avgpool_as_depthwise_conv, to_onnx_int8

    m = Pooled().eval()
    p = to_onnx(m, torch.zeros(1, 3, 8, 8), tmp_path / "f.onnx", verify=False)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(p), str(tmp_path / "pre.onnx"), skip_symbolic_shape=True)
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    before = load_exported(tmp_path / "pre.onnx")(x)
    assert _avgpool_as_depthwise_conv(tmp_path / "pre.onnx") == 1
    assert "AveragePool" not in {n.op_type for n in onnx.load(str(tmp_path / "pre.onnx")).graph.node}
    torch.testing.assert_close(load_exported(tmp_path / "pre.onnx")(x), before, atol=1e-6, rtol=0)
    y = m(x).argmax(1).detach()
    q = to_onnx_int8(m, torch.zeros(1, 3, 8, 8), tmp_path / "q.onnx", calibration=x, test=(x, y), max_top1_drop=1)
    assert json.loads((tmp_path / "q.onnx.json").read_text())["quantization"]["avgpool_as_depthwise_conv"] == 1
    assert "AveragePool" not in {n.op_type for n in onnx.load(str(q)).graph.node}


def test_export_and_runtime_arguments_checked(tmp_path):
    m = zoo.create_model("lenet5")
    with pytest.raises(ExportError, match="export takes an nn.Module, got int"):
        to_onnx(5, torch.zeros(1, 1, 28, 28), tmp_path / "a.onnx")
    with pytest.raises(ExportError, match="needs an example input: a float tensor"):
        to_onnx(m, [1], tmp_path / "a.onnx")
    with pytest.raises(ExportError, match="needs an example input"):
        to_torchscript(m, torch.zeros(1, 1, 28, 28, dtype=torch.uint8), tmp_path / "a.pt")
    assert not list(tmp_path.iterdir())
    p = to_onnx(m.eval(), torch.zeros(1, 1, 28, 28), tmp_path / "m.onnx", verify=False)
    with pytest.raises(ExportError, match="device 'bogus'"):
        load_exported(p, device="bogus")
    bad = run_cli("-m", "export", "onnx", "lenet5.mnist", "--batch", "1000000000", check=False)
    assert bad.returncode == 2 and "1..65536" in bad.stderr and "Traceback" not in bad.stderr
    from zoo.report import default_report_dir

    assert default_report_dir("r.cifar10", "x/r.cifar10.int8.onnx").name == "r.cifar10-int8-onnx"  # not the fp32's
    assert default_report_dir("r.cifar10", "x/r.cifar10.onnx").name == "r.cifar10-onnx"
