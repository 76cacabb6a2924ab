"""`ingest --download`: official files fetched MD5-checked, unpacked, ingested; tested on local file:// mirrors only."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from zoo.data import download as D
from zoo.data import ingest, open_split
from zoo.errors import ZooError

from .conftest import run_cli
from .helpers import write_cifar10, write_mnist


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def cifar_mirror(tmp_path):
    """A generated CIFAR-10 python release packed like the official cifar-10-python.tar.gz."""
    write_cifar10(tmp_path / "src")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "cifar-10-python.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return mirror


def test_download_unpack_ingest_once(cifar_mirror, tmp_path, data_home, monkeypatch):
    md5 = _md5(cifar_mirror / "cifar-10-python.tar.gz")
    # The first source is missing, the second serves the file: sources are tried in order.
    monkeypatch.setitem(D.SOURCES, "cifar10", D.Source((("cifar-10-python.tar.gz", md5),),
                                                       (f"file://{tmp_path}/nowhere/", f"file://{cifar_mirror}/")))
    root = D.download("cifar10", tmp_path / "dl", progress=False)
    assert (root / "cifar-10-batches-py" / "data_batch_1").is_file()
    assert not (root / "cifar-10-python.tar.gz").exists()  # unpacked, then removed
    record = json.loads((root / D.RECORD).read_text())["cifar-10-python.tar.gz"]
    assert record["md5"] == md5 and record["url"].startswith(f"file://{cifar_mirror}")
    ingest("cifar10", root, progress=False)
    s = open_split("cifar10", "train")
    assert len(s) == 100 and s.classes[0] == "airplane"
    (cifar_mirror / "cifar-10-python.tar.gz").unlink()
    assert D.download("cifar10", tmp_path / "dl", progress=False) == root  # done once: no second fetch


def test_checksum_mismatch_leaves_nothing(cifar_mirror, tmp_path):
    # The official MD5 against a generated archive: refused, nothing kept, not even the folder.
    with pytest.raises(ZooError, match="md5 .* expected c58f30108f718f92721af3b95e74349a; file discarded"):
        D.download("cifar10", tmp_path / "dl", mirror=f"file://{cifar_mirror}", progress=False)
    assert not (tmp_path / "dl").exists()


def test_unsafe_archive_refused(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "evil.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"bad"))
    monkeypatch.setitem(D.SOURCES, "cinic10", D.Source((("evil.tar.gz", None),), (f"file://{mirror}/",)))
    with pytest.raises(ZooError, match="cannot unpack"):
        D.download("cinic10", tmp_path / "dl", progress=False)
    assert not (tmp_path / "outside.txt").exists()
    assert not (tmp_path / "dl").exists()  # no archive, temp folder or half-unpacked tree


def test_mnist_files_kept_as_gz(tmp_path, data_home, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    write_mnist(mirror, gz=True)
    names = sorted(p.name for p in mirror.glob("*.gz"))
    assert len(names) == 4
    monkeypatch.setitem(D.SOURCES, "mnist", D.Source(tuple((n, None) for n in names), (f"file://{mirror}/",),
                                                     unpack=False))
    root = D.download("mnist", tmp_path / "dl", progress=False)
    assert "no published checksum" in capsys.readouterr().out
    assert sorted(p.name for p in root.glob("*.gz")) == names  # read as they are
    ingest("mnist", root, progress=False)
    assert len(open_split("mnist", "train")) == 200 and len(open_split("mnist", "test")) == 100


def test_cli_download(cifar_mirror, tmp_path, data_home):
    env = {"ZOO_DATA": str(data_home), "ZOO_HOME": str(tmp_path / "home")}
    bad = run_cli("-m", "zoo", "ingest", "cifar10", "--download", "--mirror", f"file://{cifar_mirror}", env=env,
                  check=False)  # the real MD5 against a generated archive
    assert bad.returncode == 2 and "every source failed" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "home" / "downloads" / "cifar10").exists()
    for args, msg in ((["svhn", "--download"], "no official source for 'svhn'"),
                      (["cifar10"], "give --root DIR"), (["cifar10", "--root", "x", "--mirror", "y"], "--download")):
        bad = run_cli("-m", "zoo", "ingest", *args, env=env, check=False)
        assert bad.returncode == 2 and msg in bad.stderr, bad.stderr
