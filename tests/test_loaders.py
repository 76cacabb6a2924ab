"""One loader interface, four backends: determinism, shapes, partial batches, backend agreement."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from zoo.data import Loader, loader
from zoo.errors import ZooError

from .helpers import make_cached_split


@pytest.fixture
def split(data_home):
    return make_cached_split("gen", n=300, size=32, chans=3)


def collect(ld):
    xs, ys = zip(*[(x.clone(), y.clone()) for x, y in ld])
    return torch.cat(xs), torch.cat(ys)


def test_native_deterministic_and_epochs_differ(split):
    a = Loader(split, 64, augment="crop_flip", seed=3, backend="native")
    b = Loader(split, 64, augment="crop_flip", seed=3, backend="native")
    xa, ya = collect(a)
    xb, yb = collect(b)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    xa2, _ = collect(a)  # second epoch: new permutation and crops
    assert not torch.equal(xa, xa2)
    assert sorted(ya.tolist()) == sorted(split.labels.tolist())  # every sample once


def test_partial_last_batch_and_drop_last(split):
    sizes = [len(y) for _, y in Loader(split, 128, backend="native")]
    assert sizes == [128, 128, 44]
    ld = Loader(split, 128, backend="native", drop_last=True)
    assert [len(y) for _, y in ld] == [128, 128] and len(ld) == 2


def test_normalisation_and_layouts(split):
    x, _ = collect(Loader(split, 100, backend="native", shuffle=False))
    mean, std = split.norm
    ref = (torch.from_numpy(np.array(split.images)).permute(0, 3, 1, 2).float() / 255
           - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(x, ref, atol=1e-5)
    xc, _ = collect(Loader(split, 100, backend="native", shuffle=False, channels_last=True))
    assert torch.equal(xc, x) and next(iter(Loader(split, 8, backend="native", channels_last=True)))[0] \
        .is_contiguous(memory_format=torch.channels_last)
    xu, _ = collect(Loader(split, 100, backend="native", shuffle=False, uint8=True))
    assert xu.dtype == torch.uint8 and torch.equal(xu, torch.from_numpy(np.array(split.images)).permute(0, 3, 1, 2))


@pytest.mark.parametrize("aug", ["none", "crop_flip", "crop_flip_cutout"])
def test_gpu_backend_equals_native(split, aug):
    xn, yn = collect(Loader(split, 64, augment=aug, seed=1, backend="native"))
    xg, yg = collect(Loader(split, 64, augment=aug, seed=1, backend="gpu"))  # the device path, run on the CPU
    assert torch.equal(xn, xg) and torch.equal(yn, yg)


def rotate(img):  # a PIL-level transform hook (module level: DataLoader workers pickle it)
    return img.rotate(10)


def test_torch_reference_backend(split):
    xn, yn = collect(Loader(split, 64, shuffle=False, backend="native"))
    xt, yt = collect(Loader(split, 64, shuffle=False, backend="torch"))
    assert torch.equal(yn, yt) and torch.allclose(xn, xt, atol=1e-5)
    xr, _ = collect(Loader(split, 64, shuffle=False, backend="torch", transform=rotate))  # runs in the workers
    assert xr.shape == xt.shape and not torch.allclose(xr, xt)
    with pytest.raises(ZooError, match="backend='torch'"):
        Loader(split, 64, backend="native", transform=rotate)


def test_jitter_on_gpu_backend_only(split):
    ld = Loader(split, 64, augment={"brightness": 0.4, "contrast": 0.4}, backend="gpu")
    x, _ = next(iter(ld))
    assert x.shape == (64, 3, 32, 32) and torch.isfinite(x).all()
    with pytest.raises(ZooError, match="jitter"):
        Loader(split, 64, augment={"brightness": 0.4}, backend="native")


def test_shards_partition_the_epoch(split):
    ys = [collect(Loader(split, 50, backend="native", seed=5, shard=(r, 3)))[1] for r in range(3)]
    idx = [Loader(split, 50, seed=5, shard=(r, 3)).epoch_order(0) for r in range(3)]
    assert sum(len(i) for i in idx) == 300 and len(set(np.concatenate(idx))) == 300
    assert all(len(y) == 100 for y in ys)


def test_bad_arguments(split):
    with pytest.raises(ZooError, match="backend"):
        Loader(split, 8, backend="dali")
    with pytest.raises(ZooError, match="augment"):
        Loader(split, 8, augment="mixup")
    with pytest.raises(ZooError, match="batch_size"):
        Loader(split, 0)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ffcv") is None, reason="ffcv not installed (optional extra)")
def test_ffcv_backend(split):
    xf, yf = collect(Loader(split, 64, backend="ffcv", shuffle=False))  # .beton written from the cache
    xn, yn = collect(Loader(split, 64, backend="native", shuffle=False))
    assert torch.equal(yf, yn) and torch.allclose(xf, xn, atol=1e-5)
    xa, ya = collect(Loader(split, 64, backend="ffcv", augment="crop_flip", drop_last=True))
    assert xa.shape == (256, 3, 32, 32) and not torch.allclose(xa, xn[:256])


@pytest.mark.realdata
def test_real_cifar10_all_backends(real_cifar10):
    for backend in ("native", "gpu", "torch"):
        ld = loader("cifar10", "train", 512, augment="crop_flip", backend=backend)
        x, y = next(iter(ld))
        assert x.shape == (512, 3, 32, 32) and y.max() < 10 and abs(float(x.mean())) < 0.5


@pytest.mark.realdata
def test_real_mnist_loads(real_mnist):
    x, y = next(iter(loader("mnist", "test", 1000, shuffle=False)))
    assert x.shape == (1000, 1, 28, 28) and len(loader("mnist", "train", 1000)) == 60
    for backend in ("gpu", "torch") + (("ffcv",) if importlib.util.find_spec("ffcv") else ()):
        xb, yb = next(iter(loader("mnist", "test", 1000, shuffle=False, backend=backend)))
        assert torch.equal(yb, y) and torch.allclose(xb, x, atol=1e-5), backend


def test_torch_backend_reads_the_files_ingest_read(tmp_path, data_home):
    """The reference pipeline re-reads the original files: the same ones, in the same order, as ingest (a --classes
    subset relabelled, a .bmp that ingest skips left out), so it agrees with the cache image for image."""
    from PIL import Image

    from zoo.data import ingest, open_split
    from zoo.data.torch_backend import source_files

    from .helpers import write_image_folder

    write_image_folder(tmp_path / "tree", n_per_class=4, classes=["a", "b", "c"], splits=["train"])
    Image.new("RGB", (32, 32), (9, 9, 9)).save(tmp_path / "tree" / "train" / "a" / "0_extra.bmp")
    ingest("abc_sub", tmp_path / "tree", classes=["c", "a"], progress=False)
    split = open_split("abc_sub", "train")
    assert split.meta["skipped_non_images"] == 1 and source_files(split) is not None  # read from the files
    xn, yn = collect(Loader(split, 5, shuffle=False, backend="native"))
    xt, yt = collect(Loader(split, 5, shuffle=False, backend="torch"))
    assert torch.equal(yt, yn) and sorted(yn.tolist()) == [0] * 4 + [1] * 4
    assert torch.allclose(xt, xn, atol=1e-5)


@pytest.mark.parametrize("kw, match", [
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
    ({"num_threads": 0}, "num_threads must be an integer from 1 to"),
    ({"num_threads": 10**6}, "num_threads must be an integer from 1 to"),
    ({"prefetch": 0}, "prefetch must be an integer >= 1, got 0"),
    ({"shard": (2, 2)}, r"shard must be \(rank, world\) with 0 <= rank < world, got \(2, 2\)"),
    ({"backend": "nativ"}, "did you mean native"),
])
def test_loader_options_are_checked(split, kw, match):
    args = {"batch_size": 64} | kw
    with pytest.raises(ZooError, match=match):
        Loader(split, args.pop("batch_size"), **args)


@pytest.mark.parametrize("kw, word", [
    ({"indices": [0.5, 1.7]}, "indices"), ({"indices": [[0, 1]]}, "indices"), ({"indices": ["a"]}, "indices"),
    ({"indices": [10**6]}, "indices must lie"), ({"indices": [-1]}, "indices must lie"),
    ({"device": "bogus"}, "device"), ({"seed": -1}, "seed"), ({"seed": 2**64}, "seed"), ({"seed": 1.5}, "seed"),
    ({"dtype": "float32"}, "dtype"), ({"dtype": torch.int64}, "dtype"), ({"device": "meta"}, "device"),
    *([({"device": "cuda"}, "CUDA is not available")] if not torch.cuda.is_available() else []),
])
def test_bad_arguments_refused_up_front(split, kw, word):
    """Float indices were truncated (0.7 read sample 0, rc 0); strings, out-of-range indices, a negative seed, a
    bogus device or dtype failed inside numpy/torch (some only once iteration began). Each is one ZooError now."""
    with pytest.raises(ZooError, match=word):
        Loader(split, 32, **kw)
    assert Loader(split, 32, indices=np.array([3, 1], np.uint16), shuffle=False).indices.tolist() == [3, 1]
