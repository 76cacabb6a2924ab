"""Readers for every official format, on small generated files; bad input gives errors naming the file."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from zoo.data import readers
from zoo.errors import ZooError

from .helpers import write_cifar10, write_cifar100, write_idx, write_image_folder, write_mnist, write_stl10


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, gz):
    truth = write_mnist(tmp_path, gz=gz)
    s = readers.read_mnist(tmp_path, "train")
    assert s.images.shape == (200, 28, 28, 1)
    assert np.array_equal(s.images[..., 0], truth["train"][0])
    assert np.array_equal(s.labels, truth["train"][1])


def test_idx_errors(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(b"\x00\x00\x09\x03" + b"\x00" * 12)
    with pytest.raises(ZooError, match="bad IDX magic"):
        readers.read_idx(p)
    write_idx(p, np.zeros((2, 28, 28), np.uint8))
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(ZooError, match=r"x-idx3-ubyte.*bytes follow"):
        readers.read_idx(p)
    write_mnist(tmp_path / "m")
    write_idx(tmp_path / "m" / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(ZooError, match="200 images but .* 3 labels"):
        readers.read_mnist(tmp_path / "m", "train")


def test_cifar10_and_100_pickles(tmp_path):
    batches = write_cifar10(tmp_path / "c10")
    s = readers.read_cifar10(tmp_path / "c10", "train")
    assert s.images.shape == (100, 32, 32, 3) and s.classes[0] == "airplane"
    assert np.array_equal(s.images[:20], batches[0][0])
    t = readers.read_cifar10(tmp_path / "c10", "test")
    assert np.array_equal(t.images, batches[5][0])
    truth = write_cifar100(tmp_path / "c100")
    s = readers.read_cifar100(tmp_path / "c100", "train")
    assert np.array_equal(s.images, truth["train"][0])
    assert len(s.classes) == 100 and s.extra["coarse_labels"].max() < 20
    assert len(s.extra_meta["coarse_classes"]) == 20


def test_malicious_pickle_rejected(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": Evil()}, protocol=2))
    with pytest.raises(ZooError, match=r"batches.meta.*not allowed"):
        readers.read_cifar10(tmp_path, "train")
    assert not (tmp_path / "pwned").exists()


def test_cifar_wrong_keys(tmp_path):
    write_cifar10(tmp_path)
    p = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    p.write_bytes(pickle.dumps({b"pixels": b"", b"labels": []}, protocol=2))
    with pytest.raises(ZooError, match=r"data_batch_3.*missing key\(s\) data"):
        readers.read_cifar10(tmp_path, "train")


def test_stl10_binary_resize_and_subset(tmp_path):
    truth = write_stl10(tmp_path)
    s = readers.read_stl10(tmp_path, "train")
    assert s.images.shape == (20, 96, 96, 3)
    assert np.array_equal(s.images, truth["train"][0]) and np.array_equal(s.labels, truth["train"][1])
    small = readers.subset_classes(readers.read_stl10(tmp_path, "train", resize=32), ["dog", "cat"], tmp_path)
    assert small.images.shape == (4, 32, 32, 3) and small.classes == ["dog", "cat"]
    cat, dog = s.classes.index("cat"), s.classes.index("dog")
    assert list(small.labels) == [0 if y == dog else 1 for y in s.labels if y in (cat, dog)]  # renumbered, in order
    with pytest.raises(ZooError, match=r"--classes: unknown class\(es\) \['unicorn'\]"):
        readers.subset_classes(s, ["unicorn"], tmp_path)
    with pytest.raises(ZooError, match="repeated"):
        readers.subset_classes(s, ["cat", "cat"], tmp_path)


def test_class_subset_through_ingest(tmp_path, data_home):
    """--classes works for every format under a new name: official files are recognised by their contents (CIFAR-100
    pickles: coarse labels follow; MNIST IDX; STL-10 binaries) and an ImageFolder tree. A canonical name keeps all
    its classes."""
    from zoo.data import ingest, open_split

    write_cifar100(tmp_path / "c100")
    full = readers.read_cifar100(tmp_path / "c100", "train")
    keep = [full.classes[7], full.classes[3]]
    with pytest.raises(ZooError, match="under a new name .e.g. cifar100_2."):
        ingest("cifar100", tmp_path / "c100", classes=keep, progress=False)
    ingest("c100_two", tmp_path / "c100", classes=keep, progress=False)
    sub = open_split("c100_two", "train")
    mask = np.isin(full.labels, [7, 3])
    assert sub.classes == keep and np.array_equal(sub.images, full.images[mask])
    assert np.array_equal(open_split("c100_two", "train", labels="coarse").labels, full.extra["coarse_labels"][mask])
    write_mnist(tmp_path / "mn", gz=True)
    ingest("mnist_01", tmp_path / "mn", classes=["0", "1"], progress=False)
    assert open_split("mnist_01", "test").classes == ["0", "1"] and open_split("mnist_01", "test").meta["format"] == "idx"
    write_stl10(tmp_path / "stl")
    ingest("stl_pets", tmp_path / "stl", classes=["dog", "cat"], resize=32, progress=False)
    assert open_split("stl_pets", "train").images.shape[1:] == (32, 32, 3)
    with pytest.raises(ZooError, match="holds CIFAR-100 python pickles, not mnist data"):
        ingest("mnist", tmp_path / "c100", progress=False)
    write_image_folder(tmp_path / "tree", n_per_class=2, classes=["a", "b", "c"], splits=["train", "test"])
    ingest("abc_2", tmp_path / "tree", classes=["c", "a"], progress=False)
    t = open_split("abc_2", "test")
    assert t.classes == ["c", "a"] and sorted(t.labels.tolist()) == [0, 0, 1, 1]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_folder_matches_pil(tmp_path, fmt):
    files = write_image_folder(tmp_path, n_per_class=2, fmt=fmt, classes=["a", "b", "c"])
    s = readers.read_image_folder(tmp_path / "train", size=(32, 32, 3))
    assert s.classes == ["a", "b", "c"] and list(s.labels) == [0, 0, 1, 1, 2, 2]
    for i, (path, _) in enumerate(files["train"]):
        assert np.array_equal(s.images[i], np.asarray(Image.open(path).convert("RGB")))


def test_image_modes_converted(tmp_path):
    """Grayscale, RGBA, palette, 16-bit and CMYK all become the dataset's channel count (documented)."""
    d = tmp_path / "train" / "x"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("L").save(d / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((32, 32), 9, np.uint8)])).save(d / "rgba.png")
    Image.fromarray(rgb).convert("P").save(d / "palette.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(d / "deep16.png")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg", quality=95)
    s = readers.read_image_folder(tmp_path / "train", size=(32, 32, 3))
    names = sorted(p.name for p in d.iterdir())
    got = dict(zip(names, s.images))
    assert np.array_equal(got["rgba.png"], rgb)  # alpha dropped
    assert np.array_equal(got["gray.png"][..., 0], got["gray.png"][..., 2])
    assert np.array_equal(got["palette.png"], np.asarray(Image.open(d / "palette.png").convert("RGB")))
    assert np.array_equal(got["deep16.png"][..., 0], rgb[..., 0])  # high byte kept
    assert np.array_equal(got["cmyk.jpg"], np.asarray(Image.open(d / "cmyk.jpg").convert("RGB")))
    gray = readers.read_image_folder(tmp_path / "train", size=(32, 32, 1))
    assert gray.images.shape == (5, 32, 32, 1)


def test_bad_images_named(tmp_path):
    write_image_folder(tmp_path, n_per_class=2, fmt="JPEG", classes=["a", "b"], splits=["train"])
    bad = tmp_path / "train" / "b" / "0001.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    (tmp_path / "train" / "a" / "junk.png").write_bytes(b"this is not a png")
    with pytest.raises(ZooError) as e:
        readers.read_image_folder(tmp_path / "train", size=(32, 32, 3))
    assert "0001.jpg: corrupt" in str(e.value) and "junk.png: " in str(e.value)


def test_non_images_skipped_and_empty_folder(tmp_path):
    write_image_folder(tmp_path, n_per_class=2, classes=["a", "b"], splits=["train"])
    (tmp_path / "train" / "a" / "README.txt").write_text("notes")
    s = readers.read_image_folder(tmp_path / "train", size=(32, 32, 3))
    assert s.extra_meta["skipped_non_images"] == 1 and len(s.labels) == 4
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(ZooError, match=r"empty: class folder has no"):
        readers.read_image_folder(tmp_path / "train", size=(32, 32, 3))


def test_wrong_size_named(tmp_path):
    write_image_folder(tmp_path, n_per_class=1, classes=["a"], splits=["train"], size=30)
    with pytest.raises(ZooError, match="image size differs"):
        readers.read_image_folder(tmp_path / "train", size=(32, 32, 3))
