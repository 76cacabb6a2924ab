"""Weights format: manifest, sha256 verification, lookup order, hash-checked download from a file URL."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import torch

import zoo
import zoo.io
from zoo import weights as W
from zoo.errors import ZooError
from zoo.meta import WeightsMeta


def _meta(model_name="lenet5", dataset="mnist") -> WeightsMeta:
    return WeightsMeta(tag=f"{model_name}.{dataset}", model=model_name, dataset=dataset,
                       classes=[str(i) for i in range(10)], mean=[0.13], std=[0.31], input_size=[1, 28, 28],
                       metrics={"top1": 0.5}, recipe={"name": "adam"})


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A private manifest with one entry, selected through ZOO_MANIFEST."""
    torch.manual_seed(0)
    model = zoo.create_model("lenet5")
    src = tmp_path / "run" / "model.safetensors"
    W.save_weights(model, src, _meta())
    manifest = tmp_path / "store" / "manifest.json"
    manifest.parent.mkdir()
    W.publish(src, manifest)
    monkeypatch.setenv("ZOO_MANIFEST", str(manifest))
    return model, manifest


def test_load_roundtrip_with_metadata(store):
    model, manifest = store
    with pytest.warns(UserWarning, match="means 'lenet5.mnist'"):
        loaded = zoo.load("lenet5")  # bare name -> default dataset (mnist), and it says so
    assert not loaded.training
    assert loaded.zoo_meta["classes"] == [str(i) for i in range(10)]
    assert loaded.zoo_meta["sha256"] == W.sha256_file(manifest.parent / "lenet5.mnist.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    x = zoo.preprocess_for(loaded)(torch.randint(0, 255, (28, 28), dtype=torch.uint8).numpy())
    assert x.shape == (1, 1, 28, 28)


def test_preprocess_same_pixels_from_pil_array_and_tensor():
    """A photo is preprocessed the same whatever its type: PIL's conversions (luma for gray, alpha dropped,
    gray replicated) apply to arrays and tensors too, and the quick-start call raises no warning."""
    import warnings

    from PIL import Image

    rgba = np.random.default_rng(0).integers(0, 256, (20, 24, 4), dtype=np.uint8)
    gray_meta = {"input_size": [1, 28, 28], "mean": [0.13], "std": [0.31]}
    rgb_meta = {"input_size": [3, 32, 32], "mean": [0.5, 0.4, 0.3], "std": [0.25, 0.24, 0.26]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the quick start (a colour image for a colour model): no warning
        zoo.preprocess_for(rgb_meta)(Image.fromarray(rgba, "RGBA"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # colour <-> gray conversions warn: test_preprocess_warns_once covers it
        for meta, pil in ((gray_meta, Image.fromarray(rgba[..., :3])), (rgb_meta, Image.fromarray(rgba, "RGBA")),
                          (rgb_meta, Image.fromarray(rgba[..., 0]))):
            pre = zoo.preprocess_for(meta)
            ref = pre(pil)
            assert ref.shape == (1, *meta["input_size"])
            src = rgba[..., 0] if pil.mode == "L" else rgba if pil.mode == "RGBA" else rgba[..., :3]
            for other in (src, torch.from_numpy(src)):
                # PIL rounds luma to uint8; the array path keeps it in float: within one grey level.
                torch.testing.assert_close(pre(other), ref, atol=1 / 255 / min(meta["std"]), rtol=0)


def test_preprocess_takes_paths_lists_tags_and_files(store, tmp_path):
    """preprocess_for takes a model, tag, .safetensors file or exported model; the result takes a PIL image, an
    array, a uint8 tensor, a path or a list of these (one batch)."""
    from PIL import Image

    model, manifest = store
    img = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "digit.png")
    pre = zoo.preprocess_for("lenet5.mnist")
    one = pre(img)
    assert one.shape == (1, 1, 28, 28)
    torch.testing.assert_close(pre(tmp_path / "digit.png"), one)
    torch.testing.assert_close(pre(str(tmp_path / "digit.png")), one)
    batch = pre([img, torch.from_numpy(img), Image.fromarray(img), tmp_path / "digit.png"])
    assert batch.shape == (4, 1, 28, 28) and all(torch.equal(b, one[0]) for b in batch)
    for source in (manifest.parent / "lenet5.mnist.safetensors", zoo.load("lenet5.mnist")):
        torch.testing.assert_close(zoo.preprocess_for(source)(img), one)
    assert "lenet5.mnist: 1x28x28" in repr(pre)


@pytest.mark.parametrize("bad, match", [
    ("picture.png", r"preprocess_for\('picture.png'\): takes a model, a tag or a .safetensors file"),
    ("dir/x", r"preprocess_for\('dir/x'\): takes a model"),
    (["a.png"], "a list carries no zoo metadata"),
    (object(), "a object carries no zoo metadata"),
    ("lenet6", "unknown model 'lenet6'"),
    ("lenet5.nope", "no trained weights for 'lenet5.nope'"),
    ("missing.safetensors", "missing.safetensors: no such weights file"),
])
def test_preprocess_for_bad_sources_are_one_error(bad, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "picture.png").write_bytes(b"")
    with pytest.raises(ZooError, match=match):
        zoo.preprocess_for(bad)


@pytest.mark.parametrize("image, match", [
    (np.zeros((28, 28), np.float32), "float32 pixels; expected uint8"),
    (torch.zeros(3, 28, 28, dtype=torch.uint8), r"C x H x W tensor: pass .permute\(1, 2, 0\)"),
    ([], "the list of images is empty"),
    ("nope.png", "nope.png: no such image file"),
    (5, "image is a int; expected a PIL image"),
])
def test_preprocess_bad_images_are_one_error(image, match, tmp_path):
    pre = zoo.preprocess_for({"input_size": [1, 28, 28], "mean": [0.1], "std": [0.3]})
    with pytest.raises(ZooError, match=match):
        pre(image)
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ZooError, match="junk.png: not a readable image"):
        pre(tmp_path / "junk.png")


def test_preprocess_warns_once_for_colour_gray_and_far_off_sizes():
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    gray_as_rgb = np.repeat(colour[..., :1], 3, axis=2)
    pre = zoo.preprocess_for({"input_size": [1, 28, 28], "mean": [0.1], "std": [0.3]})
    pre(gray_as_rgb)  # a grayscale image stored as RGB is not a colour photo: no warning
    with pytest.warns(UserWarning, match="a colour image is converted to grayscale") as rec:
        pre(colour), pre(colour)
    assert len(rec) == 1  # once per Preprocess
    rgb = zoo.preprocess_for({"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.25] * 3})
    with pytest.warns(UserWarning, match="a grayscale image is replicated to RGB"):
        rgb(colour[..., 0])
    with pytest.warns(UserWarning, match="a 1024x768 image is resized to 32x32") as rec:
        rgb(np.zeros((1024, 768, 3), np.uint8)), rgb(np.zeros((1024, 768, 3), np.uint8))
    assert len(rec) == 1


def test_bare_name_says_which_dataset_it_chose(store):
    with pytest.warns(UserWarning, match=r"'lenet5' means 'lenet5\.mnist' \(the model's default dataset"):
        zoo.load("lenet5")


def test_publish_replaces_an_entry_only_with_better_weights(store, tmp_path, capsys):
    """Committed weights stay in git history: a worse or unmeasured file must not replace a shipped entry."""
    from zoo.cli import main

    _, manifest = store
    shipped = manifest.read_bytes(), (manifest.parent / "lenet5.mnist.safetensors").read_bytes()
    model = zoo.create_model("lenet5")
    worse, unmeasured, better = (tmp_path / f"{n}.safetensors" for n in ("worse", "unmeasured", "better"))
    W.save_weights(model, worse, _meta().replace(metrics={"top1": 0.4}))
    W.save_weights(model, unmeasured, {k: v for k, v in _meta().items() if k != "metrics"})
    for f, why in ((worse, "does not beat the shipped lenet5.mnist"), (unmeasured, "no measured test metrics")):
        assert main(["publish", str(f)]) == 2
        err = capsys.readouterr().err
        assert str(f) in err and why in err
        assert (manifest.read_bytes(), (manifest.parent / "lenet5.mnist.safetensors").read_bytes()) == shipped
    W.save_weights(model, better, _meta().replace(metrics={"top1": 0.6}))
    assert main(["publish", str(better)]) == 0
    assert W.read_manifest(manifest)["lenet5.mnist"]["metrics"]["top1"] == 0.6
    assert main(["publish", str(worse), "--force"]) == 0  # a maintainer's deliberate choice
    assert W.read_manifest(manifest)["lenet5.mnist"]["metrics"]["top1"] == 0.4
    entries = json.loads(manifest.read_text())  # re-measured since: the manifest's metrics differ from the file's
    entries["weights"]["lenet5.mnist"]["metrics"]["top1"] = 0.41
    manifest.write_text(json.dumps(entries))
    assert main(["publish", str(worse), "--url", "https://example.org/w.safetensors"]) == 0  # the shipped file
    entry = W.read_manifest(manifest)["lenet5.mnist"]
    assert entry["url"] == "https://example.org/w.safetensors" and entry["metrics"]["top1"] == 0.41


def test_hash_mismatch_refused(store):
    _, manifest = store
    f = manifest.parent / "lenet5.mnist.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ZooError, match="sha256"):
        zoo.load("lenet5.mnist")


def test_download_from_file_url(store, tmp_path, zoo_home):
    _, manifest = store
    f = manifest.parent / "lenet5.mnist.safetensors"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    f.rename(mirror / f.name)
    with pytest.raises(ZooError, match="not installed"):
        zoo.load("lenet5.mnist")
    entries = json.loads(manifest.read_text())
    entries["weights"]["lenet5.mnist"]["url"] = (mirror / f.name).as_uri()
    manifest.write_text(json.dumps(entries))
    m = zoo.load("lenet5.mnist")  # downloaded into $ZOO_HOME/weights after the hash check
    assert (zoo_home / "weights" / f.name).exists() and m.zoo_meta["tag"] == "lenet5.mnist"
    (zoo_home / "weights" / f.name).unlink()
    entries["weights"]["lenet5.mnist"]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(entries))
    with pytest.raises(ZooError, match="discarded"):
        zoo.load("lenet5.mnist")
    assert not list((zoo_home / "weights").iterdir())  # nothing half-written left, temp files included



def test_download_over_http_refuses_a_cut_body(store, local_http, zoo_home):
    # The manifest's URL on a local server; a body cut short is refused (and its hash never even compared), nothing
    # is left in the weights folder; the whole body is then installed after the sha256 check.
    from .helpers import http_body

    _, manifest = store
    f = manifest.parent / "lenet5.mnist.safetensors"
    data = f.read_bytes()
    f.unlink()
    local_http.routes["/cut"] = http_body(data[:-10], length=len(data))
    local_http.routes["/w"] = http_body(data, length=None)  # no Content-Length: read to the connection's close
    entries = json.loads(manifest.read_text())
    weights = zoo_home / "weights"
    for path in ("/cut", "/w"):
        entries["weights"]["lenet5.mnist"]["url"] = local_http.url(path)
        manifest.write_text(json.dumps(entries))
        if path == "/cut":
            with pytest.raises(ZooError, match=rf"could not download weights from {local_http.url(path)} to "
                                               rf"{weights / f.name}: the body has {len(data) - 10} bytes but "
                                               rf"Content-Length announced {len(data)}"):
                zoo.load("lenet5.mnist")
            assert not weights.exists() or not list(weights.iterdir())
        else:
            assert zoo.load("lenet5.mnist").zoo_meta["tag"] == "lenet5.mnist"
            assert (weights / f.name).read_bytes() == data and sorted(p.name for p in weights.iterdir()) == [f.name]
    (weights / f.name).unlink()  # the session's weights folder is shared with other tests

def test_unknown_tags(store):
    with pytest.raises(ZooError, match="lenet5"):
        zoo.load("lenet6")
    with pytest.raises(ZooError, match="available weights"):
        zoo.load("lenet5.cifar100")


def test_safetensors_path_and_bad_file(tmp_path):
    model = zoo.create_model("mlp2")
    p = tmp_path / "m.safetensors"
    W.save_weights(model, p, _meta("mlp2"))
    assert zoo.load(p).zoo_meta["model"] == "mlp2"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ZooError, match="bad.safetensors"):
        zoo.load(bad)
    with pytest.raises(ZooError, match="does not exist"):
        zoo.load(tmp_path / "missing.safetensors")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ZooError, match=r"notes.txt is not a zoo weights file"):
        zoo.load(tmp_path / "notes.txt")
    for missing in (tmp_path / "model.pt", tmp_path / "sub" / "lenet5.mnist", "lenet5.mnist.onnx"):
        with pytest.raises(ZooError, match=r"no such file"):  # a path, not an unknown-model error
            zoo.load(missing)


def test_shipped_manifest_entries_verify():
    entries = W.read_manifest(W.PACKAGE_WEIGHTS / "manifest.json")
    assert entries, "the package ships weights"
    for tag, e in entries.items():
        for key in ("sha256", "size", "dataset", "classes", "mean", "std", "input_size", "metrics", "recipe", "commit"):
            assert key in e, (tag, key)
        m = zoo.load(tag)  # verifies the sha256
        assert m.zoo_meta["num_classes"] == len(e["classes"])
        assert (W.PACKAGE_WEIGHTS / e["file"]).stat().st_size == e["size"]


def test_atomic_write_keeps_old_file_and_no_temp_on_failure(tmp_path):
    from zoo.io import atomic_write

    p = tmp_path / "m.json"
    atomic_write(p, lambda t: t.write_text("old"))

    def fail(t):
        t.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ZooError, match=r"no space left on the device holding .*m\.json"):  # one error naming it
        atomic_write(p, fail)
    assert p.read_text() == "old" and sorted(x.name for x in tmp_path.iterdir()) == ["m.json"]
    assert p.stat().st_mode & 0o777 == 0o666 & ~zoo.io.UMASK  # readable by others, not mkstemp's 0600


def test_load_refuses_non_paths_and_non_files(tmp_path):
    import os

    for bad in (5, None, ["x"]):
        with pytest.raises(ZooError, match="zoo.load takes a registry tag or a .safetensors path"):
            zoo.load(bad)
    os.mkfifo(tmp_path / "x.safetensors")  # reading it would block forever
    with pytest.raises(ZooError, match=r"x\.safetensors is not a regular file"):
        zoo.load(tmp_path / "x.safetensors")
