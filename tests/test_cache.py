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
    out = ingest("mnist", tmp_path / "mnist", progress=False, allow_partial=True)
    assert set(out) == {"train", "test"}
    s = open_split("mnist", "train")
    assert isinstance(s.images, np.memmap) and s.images.shape == (200, 28, 28, 1)
    assert np.array_equal(s.images[..., 0], truth["train"][0])
    meta = json.loads((out["train"] / "meta.json").read_text())
    assert len(meta["mean"]) == 1 and abs(meta["mean"][0] - truth["train"][0].mean() / 255) < 1e-5
    mtime = (out["train"] / "images.npy").stat().st_mtime_ns
    ingest("mnist", tmp_path / "mnist", progress=False, allow_partial=True)  # current: not rebuilt
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
    ingest("cifar10", tmp_path / "c10", progress=False, allow_partial=True)
    assert open_split("cifar10", "test").classes[9] == "truck"
    write_stl10(tmp_path / "stl")
    ingest("stl10", tmp_path / "stl", progress=False, resize=32, allow_partial=True)
    assert open_split("stl10", "train").images.shape == (20, 32, 32, 3)
    with pytest.raises(ZooError, match="python -m zoo ingest cinic10"):
        open_split("cinic10", "train")
    with pytest.raises(ZooError, match="does not exist"):
        ingest("mnist", tmp_path / "nowhere")


def test_cinic_style_valid_split(tmp_path, data_home):
    from .helpers import CLASSES10

    write_image_folder(tmp_path / "cinic", n_per_class=1, classes=CLASSES10, splits=("train", "valid", "test"))
    assert set(ingest("cinic10", tmp_path / "cinic", progress=False, allow_partial=True)) == {"train", "valid", "test"}
    assert len(open_split("cinic10", "valid")) == 10


def test_wrong_tree_or_option_fails_before_decoding(tmp_path, data_home, monkeypatch):
    from zoo.data import native

    write_image_folder(tmp_path / "c10", n_per_class=1)  # CIFAR-10 class folders
    monkeypatch.setattr(native, "decode_files", lambda *a, **k: pytest.fail("decoded a tree it should refuse"))
    with pytest.raises(ZooError, match=r"mnist has 10 classes, found 10 \['airplane'.*differ from the canonical \['0'"):
        ingest("mnist", tmp_path / "c10", progress=False)
    with pytest.raises(ZooError, match="--resize applies to STL-10 only"):
        ingest("cifar10", tmp_path / "c10", progress=False, resize=16)
    assert not (data_home / "mnist" / "train").exists() and not (data_home / "cifar10" / "train").exists()


# ---------------------------------------------------------------- canonical datasets: classes, shape, split sizes


def test_canonical_split_sizes_and_allow_partial(tmp_path, data_home, monkeypatch, capsys):
    """A canonical name holds the published dataset: a smaller copy is refused unless --allow-partial, which records
    `partial` in meta.json; a larger one is refused always; a new name is not checked."""
    import dataclasses

    from zoo.cli import main
    from zoo.data import specs

    write_mnist(tmp_path / "m")  # 200 train / 100 test images
    with pytest.raises(ZooError, match=r"mnist/train has 200 images, the published split has 60000.*--allow-partial"):
        ingest("mnist", tmp_path / "m", progress=False)
    assert not (data_home / "mnist" / "train").exists()
    out = ingest("mnist", tmp_path / "m", progress=False, allow_partial=True)
    meta = json.loads((out["train"] / "meta.json").read_text())
    assert meta["partial"] is True and meta["published_samples"] == 60000 and meta["num_samples"] == 200
    with pytest.raises(ZooError, match=r"partial copy \(200 of 60000 images.*--allow-partial"):
        ingest("mnist", tmp_path / "m", progress=False)  # current, but partial: the same answer as a build
    assert ingest("mnist_small", tmp_path / "m", progress=False)  # a new name: any size
    assert "partial" not in open_split("mnist_small", "train").meta
    rc = main(["ingest", "mnist", "--root", str(tmp_path / "m"), "--force"])
    assert rc == 2 and "the published split has 60000" in capsys.readouterr().err
    # The published sizes themselves: exactly them is not partial, more is refused even with --allow-partial.
    exact = dataclasses.replace(specs.DATASETS["mnist"], sizes=(("train", 200), ("test", 100)))
    monkeypatch.setitem(specs.DATASETS, "mnist", exact)
    ingest("mnist", tmp_path / "m", progress=False, force=True)
    assert "partial" not in open_split("mnist", "train").meta
    monkeypatch.setitem(specs.DATASETS, "mnist", dataclasses.replace(exact, sizes=(("train", 150), ("test", 100))))
    with pytest.raises(ZooError, match="200 images, more than the published 150"):
        ingest("mnist", tmp_path / "m", progress=False, force=True, allow_partial=True)


def test_canonical_classes_checked(tmp_path, data_home, capsys):
    """`ingest cifar100 --root <a CIFAR-10 folder>` used to cache a 10-class "cifar100" with rc 0."""
    from zoo.cli import main

    write_image_folder(tmp_path / "c10", n_per_class=1)  # CIFAR-10's ten class folders
    rc = main(["ingest", "cifar100", "--root", str(tmp_path / "c10"), "--allow-partial"])
    err = capsys.readouterr().err
    assert rc == 2 and "cifar100 has 100 classes, found 10 ['airplane'" in err and "Traceback" not in err
    assert not (data_home / "cifar100").exists()
    from .helpers import write_cifar100

    write_cifar100(tmp_path / "c100")  # the official pickles with the published names: accepted (marked partial)
    ingest("cifar100", tmp_path / "c100", progress=False, allow_partial=True)
    assert len(open_split("cifar100", "train").classes) == 100
    ingest("c10_as_new", tmp_path / "c10", progress=False)  # the same tree under its own name
    ingest("c10_two", tmp_path / "c10", classes=["cat", "dog"], progress=False)  # a documented subset
    assert open_split("c10_two", "test").classes == ["cat", "dog"]


# ---------------------------------------------------------------- the cache is checked when opened


def _damage(d, how):
    """Damage the cached split folder `d` one way; returns the file the error must name."""
    images, labels, meta = d / "images.npy", d / "labels.npy", d / "meta.json"
    if how == "labels_short":  # used to train on the overlap with rc 0
        np.save(labels, np.load(labels)[:-5])
        return labels
    if how == "labels_range":
        y = np.load(labels)
        y[3] = 10
        np.save(labels, y)
        return labels
    if how == "labels_float":
        np.save(labels, np.load(labels).astype(np.float32))
        return labels
    if how == "labels_garbage":
        labels.write_bytes(b"not a numpy file")
        return labels
    if how == "images_truncated":
        images.write_bytes(images.read_bytes()[:-1000])
        return images
    if how == "images_header":
        images.write_bytes(images.read_bytes()[:40])
        return images
    if how == "images_dtype":
        np.save(images, np.load(images).astype(np.float32))
        return images
    if how == "images_shape":
        np.save(images, np.load(images)[:, :, :16])
        return images
    m = json.loads(meta.read_text())
    if how == "meta_garbage":
        meta.write_text('{"classes": [')
    elif how == "meta_std0":  # used to be blamed on the LR (NaN loss)
        m["std"] = [0.0, m["std"][1], m["std"][2]]
        meta.write_text(json.dumps(m))
    elif how == "meta_nan":
        meta.write_text(json.dumps(m).replace(str(m["mean"][0]), "NaN", 1))
    elif how == "meta_classes":
        del m["classes"]
        meta.write_text(json.dumps(m))
    elif how == "meta_count":
        m["num_samples"] += 1
        meta.write_text(json.dumps(m))
        return images
    return meta


DAMAGE = ["labels_short", "labels_range", "labels_float", "labels_garbage", "images_truncated", "images_header",
          "images_dtype", "images_shape", "meta_garbage", "meta_std0", "meta_nan", "meta_classes", "meta_count"]


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_cache_is_one_error_with_the_fix(data_home, how):
    from .helpers import make_cached_split

    make_cached_split("dmg", n=64, size=32, chans=3)
    bad = _damage(data_home / "dmg" / "train", how)
    with pytest.raises(ZooError) as e:
        open_split("dmg", "train")
    msg = str(e.value)
    assert str(bad) in msg and "python -m zoo ingest dmg --root DIR --force" in msg, msg


def test_damaged_cache_in_training_is_rc2_and_ingest_repairs_it(tmp_path, data_home, capsys):
    from zoo.cli import main

    write_image_folder(tmp_path / "src", n_per_class=4, classes=["a", "b"])
    ingest("rep", tmp_path / "src", progress=False)
    _damage(data_home / "rep" / "train", "labels_short")
    rc = main(["train", "mlp2", "--dataset", "rep", "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "labels.npy" in err and "--force" in err and not (tmp_path / "run").exists()
    ingest("rep", tmp_path / "src", progress=False)  # same source, damaged cache: rebuilt without --force
    assert len(open_split("rep", "train").labels) == 8


# ---------------------------------------------------------------- crash consistency


def test_replacing_a_split_is_one_rename(tmp_path, data_home, monkeypatch):
    """The split is a link to a version folder, swapped by one os.replace: at no instant is it missing, and a reader
    holding the old version keeps reading it."""
    write_image_folder(tmp_path / "src", n_per_class=2, classes=["a", "b"], splits=["train"])
    ingest("swap", tmp_path / "src", progress=False)
    link = data_home / "swap" / "train"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    old = open_split("swap", "train")
    old_version = link.resolve()
    write_image_folder(tmp_path / "src", n_per_class=3, classes=["a", "b"], splits=["train"])
    real, calls = os.replace, []

    def spy(src, dst, **kw):
        assert (link / "meta.json").is_file(), "the split was missing before a rename"
        real(src, dst, **kw)
        calls.append(dst)
        assert (link / "meta.json").is_file(), "the split was missing after a rename"

    with monkeypatch.context() as m:  # (monkeypatch.undo would also undo the fixture's ZOO_DATA)
        m.setattr(os, "replace", spy)
        ingest("swap", tmp_path / "src", progress=False)
    assert [os.fspath(c) for c in calls].count(os.fspath(link)) == 1  # the one rename that publishes
    new = open_split("swap", "train")
    assert len(new) == 6 and len(old) == 4 and old.images[:].shape == (4, 32, 32, 3)  # old mmap still readable
    assert not old_version.exists() and link.resolve() != old_version
    assert sorted(p.name for p in (data_home / "swap").iterdir()) == [f".train.v-{link.resolve().name[9:]}", "train"]


def test_legacy_split_folder_is_migrated(tmp_path, data_home):
    """A cache written before versioned splits holds a real folder: the next build replaces it by the link."""
    from .helpers import make_cached_split

    make_cached_split("old_style", n=16, size=32, chans=3)
    assert not (data_home / "old_style" / "train").is_symlink()
    write_image_folder(tmp_path / "src", n_per_class=2, classes=["a", "b"], splits=["train"])
    ingest("old_style", tmp_path / "src", progress=False)
    assert (data_home / "old_style" / "train").is_symlink() and len(open_split("old_style", "train")) == 4
    assert [p.name for p in (data_home / "old_style").iterdir() if ".old-" in p.name] == []


def test_killed_run_leftovers_removed_by_the_next_build(tmp_path, data_home):
    write_image_folder(tmp_path / "src", n_per_class=2, classes=["a", "b"], splits=["train"])
    ingest("kill", tmp_path / "src", progress=False)
    d = data_home / "kill"
    live = d / "train"
    # What a SIGKILL at each point leaves: a half-built temp folder, a temp link, a moved-aside legacy folder, an
    # unlinked new version (killed before the swap) and an old version (killed before its removal).
    leftovers = [d / ".train.tmp-dead1", d / ".train.old-dead2", d / ".train.v-orphan", d / ".test.v-orphan"]
    for p in leftovers:
        p.mkdir()
        (p / "images.npy").write_bytes(b"partial")
    os.symlink(".train.v-orphan", d / ".train.tmp-link-dead3")
    leftovers.append(d / ".train.tmp-link-dead3")
    mine = [d / "notes.txt", d / "keep"]  # not zoo's names: never touched
    mine[0].write_text("user file")
    mine[1].mkdir()
    ingest("kill", tmp_path / "src", progress=False)  # current: no lock taken, nothing removed
    assert all(os.path.lexists(p) for p in leftovers)
    ingest("kill", tmp_path / "src", progress=False, force=True)  # holds the lock: cleans up first
    assert not [p for p in leftovers if os.path.lexists(p)]
    assert all(p.exists() for p in mine) and len(open_split("kill", "train")) == 4 and live.is_symlink()


def test_current_split_needs_no_lock_and_open_never_locks(tmp_path, data_home):
    """A read-only $ZOO_HOME whose cache is current stays usable. Tests run as root, for whom chmod blocks no write,
    so the lock file's path is made unopenable instead (a folder in its place): any attempt to lock would fail."""
    write_image_folder(tmp_path / "src", n_per_class=2, classes=["a", "b"], splits=["train"])
    ingest("ro", tmp_path / "src", progress=False)
    lock = data_home / ".ro.lock"
    lock.unlink()
    lock.mkdir()
    assert ingest("ro", tmp_path / "src", progress=False) == {"train": data_home / "ro" / "train"}
    assert len(open_split("ro", "train")) == 4
    with pytest.raises(ZooError, match=rf"cannot write {lock}"):  # a build needs the lock: one clear error
        ingest("ro", tmp_path / "src", progress=False, force=True)
    assert len(open_split("ro", "train")) == 4


def test_full_disk_is_one_error_and_leaves_the_old_split(tmp_path, data_home, monkeypatch):
    import errno

    from zoo.data import cache

    write_image_folder(tmp_path / "src", n_per_class=2, classes=["a", "b"], splits=["train"])
    ingest("full", tmp_path / "src", progress=False)
    save = np.save

    def no_space(path, arr, *a, **k):
        if str(path).endswith("labels.npy"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(path, arr, *a, **k)

    with monkeypatch.context() as m, pytest.raises(
            ZooError, match=r"no space left on the device holding .*/full/\.train\.tmp-\w+/labels\.npy"):
        m.setattr(cache.np, "save", no_space)
        ingest("full", tmp_path / "src", progress=False, force=True)
    assert len(open_split("full", "train")) == 4
    assert [p.name for p in (data_home / "full").iterdir() if ".tmp" in p.name] == []


def test_cache_files_follow_the_umask(tmp_path, data_home):
    """Not mkdtemp's 0700: the cache is readable by every user, like a file written with open()."""
    import stat

    from zoo.io import UMASK

    write_image_folder(tmp_path / "src", n_per_class=2, classes=["a", "b"], splits=["train"])
    ingest("modes", tmp_path / "src", progress=False)
    version = (data_home / "modes" / "train").resolve()
    assert stat.S_IMODE(version.stat().st_mode) == 0o777 & ~UMASK
    for f in version.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~UMASK, f.name
    if UMASK == 0o022:
        assert stat.S_IMODE(version.stat().st_mode) == 0o755


def test_bad_resize_or_threads_named(tmp_path, data_home):
    write_stl10(tmp_path / "stl")
    for opt, value in (("resize", -5), ("resize", 0), ("threads", -1), ("resize", 2.5)):
        with pytest.raises(ZooError, match=rf"--{opt} {value!r}: expected an integer in 1..1024"):
            ingest("stl_new", tmp_path / "stl", progress=False, **{opt: value})
    assert not (data_home / "stl_new").exists()


def test_split_link_loop_is_a_damaged_cache_and_ingest_repairs_it(tmp_path, data_home):
    """A split link pointing to itself made open_split raise pathlib's RuntimeError('Symlink loop'): a traceback
    from `zoo eval` / `zoo train`. It is now the damaged-cache error, and `ingest --force` replaces the link."""
    write_mnist(tmp_path / "m", 20, 10)
    ingest("loopy", tmp_path / "m")
    link = data_home / "loopy" / "test"
    link.unlink()
    os.symlink("test", link)
    with pytest.raises(ZooError, match="the cache is damaged"):
        open_split("loopy", "test")
    ingest("loopy", tmp_path / "m", force=True)
    assert len(open_split("loopy", "test")) == 10


@pytest.mark.parametrize("name", ["images.npy", "labels.npy", "meta.json"])
def test_fifo_in_the_cache_is_refused_not_waited_on(tmp_path, data_home, name):
    """A FIFO in place of a cache file blocked open_split forever (np.load / read_text wait for a writer): `zoo eval`
    and `zoo train` hung. It is now the damaged-cache error, at once (run in a subprocess with a timeout)."""
    write_mnist(tmp_path / "m", 20, 10)
    ingest("fifo", tmp_path / "m")
    f = (data_home / "fifo" / "test").resolve() / name
    f.unlink()
    os.mkfifo(f)
    code = ("from zoo.data import open_split\nfrom zoo.errors import ZooError\ntry:\n    open_split('fifo', 'test')\n"
            "except ZooError as e:\n    print('refused:', e)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "ZOO_DATA": str(data_home)})
    assert "refused:" in p.stdout and "damaged" in p.stdout, p.stdout + p.stderr[-2000:]


def test_labels_header_claiming_terabytes_is_a_damaged_cache(tmp_path, data_home):
    """A labels.npy header declaring 2**40 labels made np.load try to allocate 8 TiB: a MemoryError traceback. The
    labels are memory-mapped first now, so the file's real length refuses it."""
    write_mnist(tmp_path / "m", 20, 10)
    ingest("huge", tmp_path / "m")
    f = (data_home / "huge" / "test").resolve() / "labels.npy"
    header = repr({"descr": "<i8", "fortran_order": False, "shape": (1 << 40,)}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    f.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 64)
    with pytest.raises(ZooError, match="labels.npy.*the cache is damaged"):
        open_split("huge", "test")


def test_ingest_arguments_checked(tmp_path, data_home):
    """ingest(..., resise=32) ignored the typo (rc 0, cached without it); root=None was a TypeError."""
    write_mnist(tmp_path / "m", 20, 10)
    with pytest.raises(ZooError, match="unknown option.*bogus"):
        ingest("opts", tmp_path / "m", bogus=1)
    with pytest.raises(ZooError, match="root must be a folder path"):
        ingest("opts", None)
    assert not (data_home / "opts").exists()
