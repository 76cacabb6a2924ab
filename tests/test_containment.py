"""Paths from outside input stay under their root: manifest `file`, embedded and --tag tags, export names."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

import zoo
from zoo import weights as W
from zoo.errors import ZooError
from zoo.io import check_tag, contained

from .conftest import run_cli


def _weights(path, tag="lenet5.mnist"):
    """A lenet5 weights file whose embedded metadata says `tag`, written as an attacker would (not via zoo)."""
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in zoo.create_model("lenet5").state_dict().items()}
    meta = {"tag": tag, "model": "lenet5", "dataset": "mnist", "classes": [str(i) for i in range(10)],
            "num_classes": 10, "mean": [0.13], "std": [0.31], "input_size": [1, 28, 28], "config_overrides": {},
            "metrics": {"top1": 0.9}}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"zoo": json.dumps(meta)})
    return path


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../x", "", "a\0b", ".."])
def test_contained_refuses_paths_that_leave_the_root(tmp_path, rel):
    with pytest.raises(ZooError, match=r"manifest file .* refused"):
        contained(tmp_path, rel, what="manifest file")


def test_contained_refuses_a_symlink_out_and_allows_subfolders(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(ZooError, match="symbolic link"):
        contained(tmp_path / "root", "link/secret", what="x")
    assert contained(tmp_path / "root", "sub/a.safetensors", what="x") == tmp_path / "root" / "sub" / "a.safetensors"
    with pytest.raises(ZooError, match="not a path"):
        contained(tmp_path, 5, what="x")


@pytest.mark.parametrize("tag", ["../evil", "a/b.c", "lenet5", "lenet5.mnist.x", "-x.y", "a.b-", "a.b c", 3])
def test_check_tag_refuses_what_the_registry_cannot_name(tag):
    with pytest.raises(ZooError, match="not a valid tag"):
        check_tag(tag)


def test_check_tag_accepts_registry_tags():
    for tag in ("lenet5_bn.mnist", "resnet18.cifar100-coarse", "mlp2.cifar10_5"):
        assert check_tag(tag) == tag


@pytest.mark.parametrize("file", ["../outside.safetensors", "/tmp/abs.safetensors", "sub/../../x.safetensors"])
def test_manifest_file_cannot_leave_the_store(tmp_path, monkeypatch, file):
    secret = _weights(tmp_path / "outside.safetensors")
    manifest = tmp_path / "store" / "manifest.json"
    manifest.parent.mkdir()
    entry = W.read_embedded_meta(secret).to_dict() | {"file": file, "sha256": W.sha256_file(secret)}
    manifest.write_text(json.dumps({"format": 1, "weights": {"lenet5.mnist": entry}}))
    monkeypatch.setenv("ZOO_MANIFEST", str(manifest))
    with pytest.raises(ZooError, match=r"manifest entry lenet5\.mnist: file .* refused"):
        zoo.load("lenet5.mnist")


def test_hostile_embedded_tag_is_refused_everywhere(tmp_path):
    """A weights file whose tag says '../../evil': zoo.load, publish and the export CLI all refuse it, and nothing
    appears outside the folders they write into."""
    bad = _weights(tmp_path / "in" / "bad.safetensors", tag="../../evil")
    with pytest.raises(ZooError, match=r"embedded metadata: tag '\.\./\.\./evil' is not a valid tag"):
        zoo.load(bad)
    manifest = tmp_path / "store" / "sub" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    with pytest.raises(ZooError, match="not a valid tag"):
        W.publish(bad, manifest)
    good = _weights(tmp_path / "in" / "good.safetensors")
    with pytest.raises(ZooError, match=r"--tag '\.\./x' is not a valid tag"):
        W.publish(good, manifest, tag="../x")
    p = run_cli("-m", "export", "onnx", str(bad), "--out", str(tmp_path / "out"), "--no-verify", check=False)
    assert p.returncode != 0 and "not a valid tag" in p.stderr
    written = sorted(str(q.relative_to(tmp_path)) for q in tmp_path.rglob("*") if q.is_file())
    assert written == ["in/bad.safetensors", "in/good.safetensors"]
    assert not os.listdir(manifest.parent)  # no manifest, no weights file: a refusal writes nothing


def test_non_json_embedded_metadata_is_one_error(tmp_path):
    p = tmp_path / "x.safetensors"
    save_file({"w": torch.zeros(1)}, str(p), metadata={"zoo": "{not json"})
    with pytest.raises(ZooError, match=r"x\.safetensors: its zoo metadata is not valid JSON"):
        zoo.load(p)
    save_file({"w": torch.zeros(1)}, str(p), metadata={"zoo": "[1, 2]"})
    with pytest.raises(ZooError, match="not a JSON object"):
        zoo.load(p)


@pytest.mark.parametrize("dataset", ["../x", "a/b", ".hidden", "x.y", ""])
def test_dataset_names_cannot_leave_the_cache(data_home, tmp_path, dataset):
    from zoo.data import ingest, open_split

    (tmp_path / "src" / "train" / "a").mkdir(parents=True)
    with pytest.raises(ZooError, match="dataset .* is not a valid name"):
        open_split(dataset, "train")
    with pytest.raises(ZooError, match="dataset .* is not a valid name"):
        ingest(dataset, tmp_path / "src", progress=False)
    p = run_cli("-m", "zoo", "train", "lenet5", "--dataset", dataset, "--epochs", "1", check=False)
    assert p.returncode == 2 and "is not a valid name" in p.stderr and "Traceback" not in p.stderr
    assert not data_home.exists() or not any(data_home.rglob("*"))


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/hostname"])
def test_onnx_external_data_outside_its_folder_is_refused(tmp_path, location):
    """An ONNX file naming an external-data file outside its own folder: refused before ONNX Runtime reads it."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from export import ExportError, load_exported

    (tmp_path / "secret.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    w = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value=location)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w])
    (tmp_path / "m").mkdir()
    path = tmp_path / "m" / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ExportError, match=r"external data of tensor 'w'.* refused"):
        load_exported(path)


@pytest.mark.parametrize("tag, folder", [("..", "model-onnx"), ("../../x", "_.._x-onnx"), ("a/b", "a_b-onnx"),
                                         ("lenet5.mnist", "lenet5.mnist-onnx"), (".hidden", "hidden-onnx")])
def test_report_folder_from_an_exported_files_tag_stays_under_reports(tag, folder):
    from pathlib import Path

    from zoo.report import default_report_dir

    assert default_report_dir(tag, "m.onnx") == Path("reports") / folder


def test_overlong_names_and_tags_refused_by_name():
    """A weights file whose embedded tag is 300 characters loaded (rc 0), then `python -m export` failed with rc 1 and
    'output directory is not writable: File name too long'. Names and tags are now bounded where they are checked."""
    from zoo.io import MAX_NAME, MAX_TAG, check_name, check_tag

    assert check_tag("a" * (MAX_TAG - 6) + ".mnist") and check_name("d" * MAX_NAME, what="dataset")
    with pytest.raises(ZooError, match="at most 200"):
        check_tag("a" * 300 + ".mnist", what="embedded tag")
    with pytest.raises(ZooError, match="dataset"):
        check_name("d" * (MAX_NAME + 1), what="dataset")
