"""WeightsMeta: one checked schema for the safetensors header, the manifest entry and model.zoo_meta."""

from __future__ import annotations

import json

import pytest

import zoo
from zoo import weights as W
from zoo.errors import ZooError
from zoo.meta import SCHEMA, WeightsMeta

BASE = {"tag": "lenet5.mnist", "model": "lenet5", "dataset": "mnist", "classes": [str(i) for i in range(10)],
        "mean": [0.13], "std": [0.31], "input_size": [1, 28, 28]}


def test_every_shipped_entry_reads_back_and_round_trips():
    entries = W.read_manifest()
    assert len(entries) == 30
    raw = json.loads(W.manifest_path().read_text())["weights"]
    for tag, meta in entries.items():
        assert isinstance(meta, WeightsMeta) and meta.tag == tag and meta.num_classes == raw[tag]["num_classes"]
        assert WeightsMeta.from_dict(meta.to_dict(), source=tag) == meta
        assert {k: v for k, v in raw[tag].items() if k in meta} == {k: meta[k] for k in raw[tag]}  # same values


def test_mapping_view_keeps_dict_readers_working():
    m = WeightsMeta.from_dict(BASE | {"metrics": {"top1": 0.5}}, source="t")
    assert m["classes"] == m.classes and m.get("metrics")["top1"] == 0.5 and m.get("nope", 7) == 7
    assert m["num_classes"] == 10 and "tag" in m and dict(m)["input_size"] == [1, 28, 28]
    with pytest.raises(KeyError):
        m["nope"]
    assert "partial_data" not in m and m.get("partial_data") is None and m.partial_data is None  # absent, as before
    assert m.replace(partial_data=["train"])["partial_data"] == ["train"]
    assert m.replace(url="u").url == "u" and m.url == ""  # frozen: replace makes a checked copy
    with pytest.raises(ZooError, match="field size='x' is not a non-negative integer or null"):
        m.replace(size="x")


@pytest.mark.parametrize("change, match", [
    ({"colour": "red"}, r"src: unknown weights metadata field\(s\) colour"),
    ({"tag": None}, "field tag=None is not a string"),
    ({"classes": []}, "field classes=\\[\\] is not a non-empty list of class names"),
    ({"input_size": [1, 28]}, r"input_size=\[1, 28\] is not \[channels, height, width\] of positive integers"),
    ({"mean": [0.1, 0.2]}, "field mean must hold 1 finite values"),
    ({"std": [0.0]}, r"std \[0.0\] must be > 0"),
    ({"std": [float("nan")]}, "std must hold 1 finite values"),
    ({"num_classes": 9}, "says num_classes=9 but lists 10 classes"),
    ({"schema": SCHEMA + 1}, f"schema {SCHEMA + 1} was written by a newer zoo"),
    ({"tag": "../x"}, "src: tag '../x' is not a valid tag"),
    ({"metrics": [1]}, "field metrics=\\[1\\] is not an object or null"),
    ({"bf16": "yes"}, "field bf16='yes' is not true, false or null"),
])
def test_bad_fields_are_one_error_naming_source_and_field(change, match):
    with pytest.raises(ZooError, match=match):
        WeightsMeta.from_dict(BASE | change, source="src")


@pytest.mark.parametrize("drop", ["tag", "classes", "input_size"])
def test_missing_required_field(drop):
    with pytest.raises(ZooError, match=f"src: weights metadata lacks {drop}"):
        WeightsMeta.from_dict({k: v for k, v in BASE.items() if k != drop}, source="src")


def test_header_manifest_and_zoo_meta_are_the_same_schema(tmp_path):
    model = zoo.create_model("lenet5")
    saved = W.save_weights(model, tmp_path / "m.safetensors", WeightsMeta.from_dict(BASE, source="t"))
    header = W.read_embedded_meta(tmp_path / "m.safetensors")
    assert header == saved.replace(file="", size=None, sha256="")  # a file's header cannot hold its own hash
    loaded = zoo.load(tmp_path / "m.safetensors")
    assert loaded.zoo_meta == header and loaded.zoo_meta.dtype == "float32"
    manifest = tmp_path / "store" / "manifest.json"
    manifest.parent.mkdir()
    W.publish(tmp_path / "m.safetensors", manifest, force=True)
    entry = W.read_manifest(manifest)["lenet5.mnist"]
    assert entry.replace(file="", size=None, sha256="") == header and entry.sha256 == W.sha256_file(
        manifest.parent / "lenet5.mnist.safetensors")


def test_model_cards_are_generated_from_the_manifest(tmp_path):
    """docs/weights/ is what `python -m zoo cards` writes from the manifest: a stale card fails here."""
    from zoo import cards

    entries = W.read_manifest()
    assert cards.stale(entries) == [], "run: python -m zoo cards"
    written = cards.write(entries, tmp_path)
    assert len(written) == len(entries) + 1
    c10 = (tmp_path / "resnet18.cifar10.md").read_text()
    assert cards.CIFAR10_JPEG in c10 and entries["resnet18.cifar10"].sha256 in c10  # every CIFAR-10 card: the caveat
    assert cards.CIFAR10_JPEG not in (tmp_path / "resnet18.cifar100.md").read_text()
    (tmp_path / "gone.cifar10.md").write_text(cards.GENERATED + "\nold")
    (tmp_path / "mine.md").write_text("a user's notes")
    cards.write(entries, tmp_path)
    assert not (tmp_path / "gone.cifar10.md").exists() and (tmp_path / "mine.md").exists()  # only its own files go
