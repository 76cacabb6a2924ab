"""The C++ extension against its pure-Python/torch counterparts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data import native
from zoo.data.native import Augment

pytestmark = pytest.mark.skipif(not native.available(), reason="native extension not built")


def test_features_report_codecs():
    f = native.features()
    assert f["native"] and isinstance(f["jpeg"], bool) and isinstance(f["png"], bool)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_decode_equals_pil(tmp_path, fmt):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    p = tmp_path / f"x.{fmt.lower()}"
    Image.fromarray(img).save(p, fmt)
    out = np.zeros((24, 20, 3), np.uint8)
    status = native._native.decode(p.read_bytes(), out)
    if status == native.NO_CODEC:
        pytest.skip(f"{fmt} codec not compiled in")
    assert status == native.OK
    assert np.array_equal(out, np.asarray(Image.open(p).convert("RGB")))
    assert native._native.decode(p.read_bytes(), np.zeros((20, 20, 3), np.uint8)) == native.SIZE_MISMATCH
    assert native._native.decode(b"garbage", out) == native.UNKNOWN_FORMAT
    assert native._native.decode(p.read_bytes()[: len(p.read_bytes()) // 2], out) == native.CORRUPT


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("uint8", [False, True])
@pytest.mark.parametrize("aug", ["none", "flip", "crop", "crop_flip_cutout"])
@pytest.mark.parametrize("chans", [1, 3])
def test_gather_matches_torch_reference(aug, uint8, channels_last, chans):
    rng = np.random.default_rng(3)
    src = rng.integers(0, 256, (50, 28, 28, chans), dtype=np.uint8)
    index = rng.permutation(50)[:33].astype(np.int64)
    a = Augment.parse(aug)
    params = a.sample(len(index), 28, 28, rng)
    lut = None if uint8 else native.make_lut([0.4] * chans, [0.3] * chans)
    shape = (33, 28, 28, chans) if channels_last else (33, chans, 28, 28)
    out = torch.empty(shape, dtype=torch.uint8 if uint8 else torch.float32)
    got = native.gather_native(src, index, params, a.crop_pad, a.cutout, lut, channels_last, out, threads=2)
    ref = native.gather_torch(torch.from_numpy(src), torch.from_numpy(index), params, a.crop_pad, a.cutout,
                              None if lut is None else torch.from_numpy(lut), channels_last)
    assert got.shape == ref.shape == (33, chans, 28, 28)
    assert torch.equal(got, ref)  # identical pixels, not just close


def test_gather_rejects_bad_arguments():
    src = np.zeros((4, 8, 8, 3), np.uint8)
    out = np.zeros((2, 3, 8, 8), np.float32)
    lut = native.make_lut([0.5] * 3, [0.5] * 3)
    with pytest.raises(IndexError):
        native._native.gather(src, np.array([0, 9]), None, None, None, 0, 8, 8, None, None, 0, lut, False, out, 1)
    with pytest.raises(IndexError):
        native._native.gather(src, np.array([0, 1]), np.array([9, 0], np.int32), np.array([0, 0], np.int32), None,
                              0, 8, 8, None, None, 0, lut, False, out, 1)
    with pytest.raises(ValueError):
        native._native.gather(src, np.array([0, 1]), None, None, None, 0, 8, 8, None, None, 0, lut, False,
                              np.zeros((1,), np.float32), 1)


def test_triton_kernel_matches_reference_in_interpreter():
    """The GPU loader's Triton kernel, run by Triton's CPU interpreter, equals the torch reference."""
    pytest.importorskip("triton")
    from .conftest import run_cli

    code = (
        "import numpy as np, torch\n"
        "from zoo.data import native, gpu_kernels\n"
        "from zoo.data.native import Augment\n"
        "rng = np.random.default_rng(0)\n"
        "src = torch.from_numpy(rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8))\n"
        "idx = torch.from_numpy(rng.permutation(40)[:25].astype(np.int64))\n"
        "lut = torch.from_numpy(native.make_lut([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]))\n"
        "for aug in ['none', 'crop_flip', 'crop_flip_cutout']:\n"
        "    a = Augment.parse(aug); p = a.sample(25, 32, 32, rng)\n"
        "    for cl in (False, True):\n"
        "        for l in (lut, None):\n"
        "            ref = native.gather_torch(src, idx, p, a.crop_pad, a.cutout, l, cl)\n"
        "            got = gpu_kernels.augment(src, idx, p, a.crop_pad, a.cutout, l, cl)\n"
        "            assert torch.equal(ref, got), (aug, cl, l is None)\n"
        "print('identical')\n"
    )
    assert "identical" in run_cli("-c", code, env={"TRITON_INTERPRET": "1"}).stdout


def test_channel_histogram_matches_numpy():
    rng = np.random.default_rng(5)
    for c in (1, 3):
        imgs = rng.integers(0, 256, (37, 9, 11, c), dtype=np.uint8)
        got = native._native.channel_histogram(imgs, 2)
        ref = np.stack([np.bincount(imgs[..., k].ravel(), minlength=256) for k in range(c)])
        assert np.array_equal(got, ref)
