"""The C++ extension against its pure-Python/torch counterparts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data import native
from zoo.data.native import Augment
from zoo.errors import ZooError

from .conftest import run_cli

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


# ---------------------------------------------------------------- memory safety under any argument (issue #20)
# The C++ refuses every array it would otherwise convert into a temporary (a list, another dtype, a strided view):
# a pointer into such a temporary dangles, and an output written into one is lost. zoo.data.native converts the
# small inputs itself (keeping the converted arrays alive) and refuses bad ones with a ZooError naming them.
# csrc/sanitize.sh runs this file against an ASan/UBSan build, where a dangling read aborts the run.


def test_sanitizer_run_uses_the_sanitized_build():
    """Under csrc/sanitize.sh the module loaded is the ASan build it names, not the venv's normal one."""
    lib = os.environ.get("ZOO_NATIVE_LIB")
    if not lib:
        assert not native.features()["asan"]
        pytest.skip("not a sanitizer run (csrc/sanitize.sh sets ZOO_NATIVE_LIB)")
    assert os.path.samefile(native._native.__file__, lib)
    assert native.features()["asan"] is True


def _gather_case(rng, n=20, b=9, hw=12, c=3):
    src = rng.integers(0, 256, (n, hw, hw, c), dtype=np.uint8)
    index = rng.integers(0, n, b)
    return src, index


@pytest.mark.parametrize("kind", ["list", "int16", "uint8", "int32_bigendian", "strided", "strided_int64"])
def test_gather_converts_any_integer_index(kind):
    rng = np.random.default_rng(11)
    src, index = _gather_case(rng)
    given = {
        "list": index.tolist(),
        "int16": index.astype(np.int16),
        "uint8": index.astype(np.uint8),
        "int32_bigendian": index.astype(">i4"),
        "strided": np.repeat(index.astype(np.int32), 2)[::2],
        "strided_int64": np.repeat(index, 2)[::2],
    }[kind]
    a = Augment.parse("crop_flip_cutout")
    params = a.sample(len(index), 12, 12, rng)
    out = torch.empty((len(index), 12, 12, 3), dtype=torch.uint8)
    got = native.gather_native(src, given, params, a.crop_pad, a.cutout, None, True, out, threads=2)
    ref = native.gather_torch(torch.from_numpy(src), torch.from_numpy(index), params, a.crop_pad, a.cutout, None, True)
    assert torch.equal(got, ref)
    # No augmentation: plain fancy indexing is the reference.
    plain = native.gather_native(src, given, Augment().sample(len(index), 12, 12, rng), 0, 0, None, True,
                                 torch.empty((len(index), 12, 12, 3), dtype=torch.uint8), threads=1)
    assert np.array_equal(plain.permute(0, 2, 3, 1).numpy(), src[index])


def test_gather_converts_per_sample_params():
    rng = np.random.default_rng(12)
    src, index = _gather_case(rng)
    a = Augment.parse("crop_flip_cutout")
    params = a.sample(len(index), 12, 12, rng)
    loose = {k: (v.tolist() if k in ("crop_y", "cut_x") else v.astype(np.int64) if k == "crop_x" else
                 v.astype(bool) if k == "flip" else np.repeat(v, 2)[::2]) for k, v in params.items()}
    lut = native.make_lut([0.5] * 3, [0.25] * 3)
    got = native.gather_native(src, index, loose, a.crop_pad, a.cutout, lut.astype(np.float64), False,
                               torch.empty((len(index), 3, 12, 12)), threads=2)
    ref = native.gather_torch(torch.from_numpy(src), torch.from_numpy(index), params, a.crop_pad, a.cutout,
                              torch.from_numpy(lut), False)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("index, words", [
    (np.array([0.0, 1.0]), "index must be a 1-D array of integers"),
    (np.array([True, False]), "index must be a 1-D array of integers"),
    (["a", "b"], "index must be a 1-D array of integers"),
    (np.zeros((2, 1), np.int64), "index must be a 1-D array of integers"),
    (np.array([0, 20]), "index[1] = 20 is outside src's 20 samples"),
    (np.array([-1, 0]), "index[0] = -1"),
    (np.array([0, 2**63], np.uint64), "index has values outside int64"),
])
def test_gather_refuses_bad_index(index, words):
    src, _ = _gather_case(np.random.default_rng(13))
    out = torch.empty((2, 12, 12, 3), dtype=torch.uint8)
    with pytest.raises(ZooError) as e:
        native.gather_native(src, index, Augment().sample(2, 12, 12, np.random.default_rng(0)), 0, 0, None, True,
                             out, threads=1)
    assert words in str(e.value)


def test_gather_refuses_bad_out_src_params():
    rng = np.random.default_rng(14)
    src, index = _gather_case(rng, b=2)
    p = Augment.parse("crop").sample(2, 12, 12, rng)
    ok_out = torch.empty((2, 12, 12, 3), dtype=torch.uint8)
    bad_outs = [torch.empty((2, 12, 12, 3)),  # float32 where uint8 is written
                torch.empty((2, 3, 12, 12), dtype=torch.uint8),  # NCHW shape for channels_last
                torch.empty((2, 12, 24, 3), dtype=torch.uint8)[:, :, ::2],  # strided view: written to a copy
                np.zeros((2, 12, 12, 3), np.uint8)]  # not a tensor
    for out in bad_outs:
        with pytest.raises(ZooError, match="out must be a contiguous CPU"):
            native.gather_native(src, index, p, 4, 0, None, True, out, threads=1)
    for bad_src in (src.astype(np.int16), src[:, :, ::-1], src.tolist(), src[..., :2]):
        with pytest.raises(ZooError, match="src must"):
            native.gather_native(bad_src, index, p, 4, 0, None, True, ok_out, threads=1)
    with pytest.raises(ZooError, match="crop_y must have 2 entries"):
        native.gather_native(src, index, {**p, "crop_y": p["crop_y"][:1]}, 4, 0, None, True, ok_out, threads=1)
    with pytest.raises(ZooError, match="crop window 0 is outside the padded image"):
        native.gather_native(src, index, {**p, "crop_y": np.array([9, 0])}, 4, 0, None, True, ok_out, threads=1)
    with pytest.raises(ZooError, match="crop_x has values outside int32"):
        native.gather_native(src, index, {**p, "crop_x": np.array([2**40, 0])}, 4, 0, None, True, ok_out, threads=1)
    with pytest.raises(ZooError, match=r"lut must be C x 256 = \(3, 256\)"):
        native.gather_native(src, index, p, 4, 0, np.zeros((1, 256), np.float32), True, torch.empty(2, 12, 12, 3), 1)


def test_extension_refuses_what_it_would_convert():
    """The C++ itself, called directly: a list, another dtype, a strided or read-only array is an error naming the
    argument, never a silently converted temporary (the use-after-free and the lost output of issue #20)."""
    rng = np.random.default_rng(15)
    # 300 samples: numpy caches freed buffers under 1 KiB instead of freeing them, which would hide a dangling
    # pointer into a converted temporary from ASan; these are freed for real.
    b = 300
    src, index = _gather_case(rng, b=b)
    lut = native.make_lut([0.5] * 3, [0.5] * 3)
    out = np.zeros((b, 3, 12, 12), np.float32)
    crop = np.zeros(b, np.int32)

    def call(**kw):
        a = dict(src=src, index=index, crop_y=None, crop_x=None, flip=None, pad=0, out_h=12, out_w=12, cut_y=None,
                 cut_x=None, cut=0, lut=lut, channels_last=False, out=out, threads=2)
        a.update(kw)
        return native._native.gather(**a)

    call()  # the exact types work
    bad = [("index", index.tolist()), ("index", index.astype(np.int16)), ("index", np.repeat(index, 2)[::2]),
           ("index", index.astype(">i8")), ("src", src[:, ::-1]), ("src", src.astype(np.int32)),
           ("lut", lut.astype(np.float64)), ("lut", np.asfortranarray(np.repeat(lut, 2, 1)[:, ::2])),
           ("out", np.zeros((b, 3, 12, 24), np.float32)[..., ::2]), ("out", np.zeros((b, 3, 12, 12), np.float64))]
    for name, value in bad:
        with pytest.raises(ValueError, match=f"^{name} must be a C-contiguous"):
            call(**{name: value})
    ro = np.zeros((b, 3, 12, 12), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out must be a C-contiguous writeable"):
        call(out=ro)
    # Per-sample params: a list, a safely castable dtype, a strided view (what pybind11 would have converted).
    for name, dtype in (("crop_y", np.int32), ("crop_x", np.int32), ("cut_y", np.int32), ("cut_x", np.int32),
                        ("flip", np.uint8)):
        good = {"crop_y": crop, "crop_x": crop, "cut": 4, "cut_y": crop, "cut_x": crop, "flip": crop.astype(np.uint8)}
        for value in (np.zeros(b, dtype).tolist(), np.zeros(b, np.int16 if dtype == np.int32 else bool),
                      np.zeros(2 * b, dtype)[::2]):
            with pytest.raises(ValueError, match=f"^{name} must be a C-contiguous {np.dtype(dtype).name}"):
                call(**{**good, name: value})
    with pytest.raises(IndexError, match="crop window 0 is outside"):  # computed in 64 bits: no int overflow
        call(crop_y=np.full(b, 2**31 - 1, np.int32), crop_x=crop, pad=2**30 - 10)
    with pytest.raises(ValueError, match="output size overflows"):
        call(out_h=2**31 - 1, out_w=2**31 - 1)
    hist_in = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    for bad_images in (hist_in[:, ::2], hist_in.astype(np.int16), hist_in.tolist()):
        with pytest.raises(ValueError, match="^images must be a C-contiguous uint8"):
            native._native.channel_histogram(bad_images, 2)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_decode_refuses_out_it_cannot_write(tmp_path, fmt):
    """decode into a strided/wrong-dtype/wrong-rank/read-only out raises (it used to decode into a converted copy
    and report success with out still zero)."""
    img = np.random.default_rng(2).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    buf = tmp_path / "x"
    Image.fromarray(img).save(buf, fmt)
    data = buf.read_bytes()
    ro = np.zeros((24, 20, 3), np.uint8)
    ro.flags.writeable = False
    bad = [np.zeros((24, 40, 3), np.uint8)[:, ::2], np.zeros((24, 20, 3), np.float32), np.zeros((24, 20), np.uint8),
           np.zeros((1, 24, 20, 3), np.uint8), ro, np.zeros((24, 20, 3), np.uint8).tolist()]
    for out in bad:
        with pytest.raises(ValueError, match="^out must be a C-contiguous"):
            native._native.decode(data, out)
        with pytest.raises(ZooError, match="^out must be a C-contiguous"):
            native.decode(data, out)
    with pytest.raises(ZooError, match="1 or 3 channels"):
        native.decode(data, np.zeros((24, 20, 4), np.uint8))
    assert native._native.decode(data, np.zeros((24, 20, 4), np.uint8)) == native.SIZE_MISMATCH  # not written
    # The wrapper (native, PIL for what it lacks) gives PIL's pixels; status OK only with out written.
    out = np.zeros((24, 20, 3), np.uint8)
    assert native.decode(data, out) == native.OK
    assert np.array_equal(out, native.decode_pil(data, 24, 20, 3)[1])
    assert native.decode(data, np.zeros((20, 20, 3), np.uint8)) == native.SIZE_MISMATCH


def _image_files(tmp_path, k=4):
    rng = np.random.default_rng(4)
    paths = []
    for i in range(k):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_oversize_file_refused_before_reading(tmp_path, monkeypatch):
    paths = _image_files(tmp_path)
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:  # sparse: 65 MiB on paper, nothing on disk; over the default cap
        f.write(Path(paths[0]).read_bytes())
        f.truncate(native.MAX_FILE_BYTES + 1)
    files = [*paths, str(huge), str(tmp_path / "missing.png")]
    want = [native.OK] * 4 + [native.TOO_LARGE, native.IO_ERROR]
    out = np.zeros((6, 8, 8, 3), np.uint8)
    assert native.decode_files(files, out, threads=2).tolist() == want
    # The PIL fallback (no extension) applies the same cap and gives the same pixels.
    fallback = np.zeros_like(out)
    monkeypatch.setattr(native, "_native", None)
    assert native.decode_files(files, fallback, threads=2).tolist() == want
    monkeypatch.undo()
    assert np.array_equal(out, fallback) and not out[4].any()
    # A smaller cap, as a caller decides it: every file over it refused, by name, in the ingest error.
    small = len(Path(paths[2]).read_bytes()) - 1
    status = native.decode_files(paths, np.zeros((4, 8, 8, 3), np.uint8), max_bytes=small)
    assert status[2] == native.TOO_LARGE
    from zoo.data import readers

    folder = tmp_path / "ds" / "cls"
    folder.mkdir(parents=True)
    for p in paths:
        (folder / Path(p).name).write_bytes(Path(p).read_bytes())
    monkeypatch.setattr(native, "MAX_FILE_BYTES", 10)
    with pytest.raises(ZooError) as e:
        readers.read_image_folder(tmp_path / "ds", size=(8, 8, 3), threads=2)
    assert str(folder / "img0.png") in str(e.value) and "MAX_FILE_BYTES" in str(e.value)


def test_thread_counts_refused_in_python_clamped_in_cpp(tmp_path):
    """Python refuses a thread count outside [1, MAX_THREADS] (ZooError naming it); the C++ clamps whatever it is
    given to [1, 256] (so a direct call with a billion threads neither aborts nor allocates per thread)."""
    paths = _image_files(tmp_path)
    out = np.zeros((4, 8, 8, 3), np.uint8)
    for bad in (native.MAX_THREADS + 1, 10**9, -1, 2.5, True):
        with pytest.raises(ZooError, match="threads must be an integer from 1 to 256"):
            native.decode_files(paths, out, threads=bad)
        with pytest.raises(ZooError, match="threads must be an integer from 1 to 256"):
            native.gather_native(np.zeros((2, 8, 8, 3), np.uint8), [0], {}, 0, 0, None, True,
                                 torch.empty((1, 8, 8, 3), dtype=torch.uint8), bad)
    assert native.features()["max_threads"] == native.MAX_THREADS
    assert native.decode_files(paths, out, threads=native.MAX_THREADS).tolist() == [native.OK] * 4
    ref = out.copy()
    out[:] = 0
    assert native._native.decode_files(paths, out, 10**9, 1 << 20).tolist() == [native.OK] * 4
    assert np.array_equal(out, ref)
    imgs = np.random.default_rng(6).integers(0, 256, (300, 5, 3), dtype=np.uint8)
    want = np.stack([np.bincount(imgs[..., k].ravel(), minlength=256) for k in range(3)])
    for threads in (10**9, 0, -5):
        assert np.array_equal(native._native.channel_histogram(imgs, threads), want)
    src, index = _gather_case(np.random.default_rng(7))
    got = np.zeros((len(index), 12, 12, 3), np.uint8)
    native._native.gather(src, index, None, None, None, 0, 12, 12, None, None, 0, None, True, got, 10**9)
    assert np.array_equal(got, src[index])


def test_channel_histogram_any_layout_and_fallback(monkeypatch):
    imgs = np.random.default_rng(8).integers(0, 256, (20, 6, 8, 3), dtype=np.uint8)[:, :, ::2]  # strided
    got = native.channel_histogram(imgs)
    monkeypatch.setattr(native, "_native", None)
    assert np.array_equal(got, native.channel_histogram(imgs))
    with pytest.raises(ZooError, match="images must be a uint8"):
        native.channel_histogram(imgs.astype(np.int64))


def _huge_sparse_file(tmp_path, first_bytes: bytes) -> str | None:
    """A sparse file past the 47-bit address space (no malloc can hold it, whatever the overcommit setting):
    on tmp_path if its file system allows, else /dev/shm (tmpfs)."""
    for d in (str(tmp_path), "/dev/shm"):
        if not os.path.isdir(d) or not os.access(d, os.W_OK):
            continue
        p = os.path.join(d, f"zoo-huge-{os.getpid()}.png")
        try:
            with open(p, "wb") as f:
                f.write(first_bytes)
                f.truncate(1 << 62)
            return p
        except OSError:
            if os.path.exists(p):
                os.remove(p)
    return None


def test_worker_thread_exception_is_an_error_naming_the_file(tmp_path):
    """An exception on a C++ worker thread (here: out of memory reading a file the caller allowed to be huge)
    is one ZooError naming the file, not std::terminate. Run in a subprocess, so an abort fails only this test."""
    paths = _image_files(tmp_path)
    huge = _huge_sparse_file(tmp_path, Path(paths[0]).read_bytes())
    if huge is None:
        pytest.skip("no file system here takes a 2**62-byte sparse file")
    try:
        code = (
            "import sys, numpy as np\n"
            "from zoo.data import native\n"
            "from zoo.errors import ZooError\n"
            "paths = sys.argv[1:]\n"
            "out = np.zeros((len(paths), 8, 8, 3), np.uint8)\n"
            "try:\n"
            "    native.decode_files(paths, out, threads=2, max_bytes=2**63 - 1)\n"
            "except ZooError as e:\n"
            "    print('ZooError:', e)\n"
        )
        # Index 3 of 4 files on 2 threads is decoded by the second (worker) thread.
        p = run_cli("-c", code, *paths[:3], huge, check=False, timeout=120)
    finally:
        os.remove(huge)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"ZooError: cannot decode {huge}: out of memory" in p.stdout


def test_thread_start_failure_runs_the_work_inline():
    """When no thread can be started (address-space limit: each thread needs a stack), the C++ does the chunks
    itself: the same result, no std::terminate. Not under ASan, whose shadow memory needs the address space."""
    if native.features()["asan"]:
        pytest.skip("an address-space limit breaks ASan itself")
    code = (
        "import resource, numpy as np\n"
        "from zoo.data import native\n"
        "imgs = np.random.default_rng(0).integers(0, 256, (4000, 3), dtype=np.uint8)\n"
        "want = np.stack([np.bincount(imgs[:, k], minlength=256) for k in range(3)])\n"
        "native._native.channel_histogram(imgs, 1)\n"
        "vm = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + (4 << 20), resource.RLIM_INFINITY))\n"
        "got = native._native.channel_histogram(imgs, 8)\n"
        "resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
        "print('equal' if np.array_equal(got, want) else 'DIFFERENT')\n"
    )
    p = run_cli("-c", code, check=False, timeout=120)
    assert p.returncode == 0 and "equal" in p.stdout, p.stdout + p.stderr[-3000:]


def test_fifo_is_refused_not_waited_on(tmp_path, monkeypatch):
    """A FIFO named like an image: opening it for reading used to block until a writer came (forever), in the C++
    reader and in the PIL fallback alike. Both now open without blocking and refuse it as IO_ERROR at once."""
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    code = ("import numpy as np\nfrom zoo.data import native\n"
            f"print(native._native.decode_files([{str(fifo)!r}], np.zeros((1, 8, 8, 3), np.uint8), 1, 1 << 20)[0])\n"
            f"print(native._read_capped({str(fifo)!r}, 1 << 20)[0])\n")
    p = run_cli("-c", code, check=False, timeout=60)
    assert p.returncode == 0 and p.stdout.split() == [str(native.IO_ERROR)] * 2, p.stdout + p.stderr[-2000:]


@pytest.mark.parametrize("max_bytes", ["x", float("nan"), 1.5, 2**70, -1, True])
def test_decode_files_max_bytes_checked(tmp_path, max_bytes):
    """max_bytes was int()-converted: 'x' and NaN were ValueErrors, 1.5 silently 1, 2**70 a pybind TypeError."""
    with pytest.raises(ZooError, match="max_bytes must be an integer"):
        native.decode_files([str(tmp_path / "a.png")], np.zeros((1, 8, 8, 3), np.uint8), max_bytes=max_bytes)


def test_gather_lut_of_non_numbers_is_a_zoo_error():
    src = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ZooError, match="lut must be a C x 256 array"):
        native.gather_native(src, [0], {}, 0, 0, "x", False, torch.empty(1, 3, 8, 8), 1)


@pytest.mark.parametrize("spec, field", [
    ({"crop_pad": -1}, "crop_pad"), ({"cutout": -3}, "cutout"), ({"crop_pad": True}, "crop_pad"),
    ({"crop_pad": 1.5}, "crop_pad"), ({"cutout": 10**9}, "cutout"), ({"flip": "yes"}, "flip"),
    ({"brightness": float("nan")}, "brightness"), ({"brightness": -1}, "brightness"),
    ({"contrast": float("inf")}, "contrast"), ({"rotate": 5}, "unknown option"), (["crop"], "unknown augment"),
])
def test_augment_values_checked(spec, field):
    """A negative cutout silently meant 'off', flip='yes' meant True, crop_pad=-1 failed mid-epoch in numpy, a NaN
    or negative jitter in torchvision, an unknown key or a list was a TypeError: each is now one ZooError naming it."""
    with pytest.raises(ZooError, match=field):
        Augment.parse(spec)
    assert Augment.parse({"crop_pad": 4, "flip": True, "cutout": 8, "brightness": 0.4, "contrast": 1}).contrast == 1.0
