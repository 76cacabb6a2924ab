"""`ingest --download`: official files fetched MD5-checked, unpacked, ingested; tested on local file:// mirrors and a
local HTTP server on 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time

import pytest

import zoo.io
from zoo.data import download as D
from zoo.data import ingest, open_split
from zoo.errors import ZooError

from .conftest import run_cli
from .helpers import http_body, write_cifar10, write_mnist


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
    ingest("cifar10", root, progress=False, allow_partial=True)  # a generated archive: fewer images than published
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
    ingest("mnist", root, progress=False, allow_partial=True)  # generated files: fewer images than published
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


# --- Downloads over HTTP from 127.0.0.1 only (the `local_http` fixture): every failure leaves nothing behind. ---


DATA = bytes(range(256)) * 4096  # 1 MiB, not one repeated byte


def _left(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("mode", ["content-length", "connection-close", "chunked"])
def test_http_download_with_and_without_content_length(local_http, tmp_path, mode):
    local_http.routes["/f"] = http_body(DATA, length=None if mode != "content-length" else "auto",
                                        chunked=mode == "chunked", piece=100_000)
    dest = tmp_path / "out" / "f.bin"
    sha = zoo.io.download(local_http.url("/f"), dest, hashlib.md5(DATA).hexdigest(), algo="md5",
                          progress=True)  # progress with no total where the size is not announced
    assert dest.read_bytes() == DATA and sha == hashlib.sha256(DATA).hexdigest()
    assert _left(dest.parent) == ["f.bin"]  # no temp file beside it


def test_http_short_body_refused_without_checksum(local_http, tmp_path):
    local_http.routes["/f"] = http_body(DATA, length=len(DATA) + 1000)  # the connection closes 1000 bytes early
    dest = tmp_path / "out" / "f.bin"
    with pytest.raises(ZooError) as e:
        zoo.io.download(local_http.url("/f"), dest, None)
    msg = str(e.value)
    assert f"{len(DATA)} bytes but Content-Length announced {len(DATA) + 1000}" in msg
    assert local_http.url("/f") in msg and str(dest) in msg and msg.endswith("nothing kept")
    assert _left(dest.parent) == []


def test_http_announced_size_over_cap_refused_before_body(local_http, tmp_path):
    local_http.routes["/f"] = http_body(DATA)
    dest = tmp_path / "f.bin"
    with pytest.raises(ZooError, match=f"announces {len(DATA)} bytes, more than the 1000-byte cap"):
        zoo.io.download(local_http.url("/f"), dest, None, max_bytes=1000)
    assert _left(tmp_path) == []


def test_http_body_over_cap_stopped_at_the_cap(local_http, tmp_path):
    # No Content-Length and a 256 MiB body: the client must hang up right after the cap, not read it all.
    sent, done = [0], threading.Event()

    def endless(h):
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        try:
            for _ in range(4096):
                h.wfile.write(b"\0" * (1 << 16))
                sent[0] += 1 << 16
        finally:
            done.set()

    local_http.routes["/f"] = endless
    dest = tmp_path / "f.bin"
    with pytest.raises(ZooError, match="the body passes the 100000-byte cap; stopped"):
        zoo.io.download(local_http.url("/f"), dest, None, max_bytes=100_000)
    assert done.wait(10)
    assert sent[0] < 32 << 20  # what the socket buffers took before the hang-up, far below 256 MiB
    assert _left(tmp_path) == []


def test_http_deadline_stops_a_trickling_server(local_http, tmp_path):
    # 100 bytes every 50 ms for 2 s: each read gets data well within the socket timeout; only the deadline stops it.
    local_http.routes["/slow"] = http_body(DATA[:4000], piece=100, pause=0.05)

    def mute(h):
        time.sleep(2)  # no headers before the deadline

    local_http.routes["/mute"] = mute
    for path in ("/slow", "/mute"):
        dest = tmp_path / "f.bin"
        t0 = time.monotonic()
        with pytest.raises(ZooError, match=r"not finished within the 0.5 s deadline .*ZOO_DOWNLOAD_DEADLINE") as e:
            zoo.io.download(local_http.url(path), dest, None, deadline=0.5)
        assert time.monotonic() - t0 < 1.5, path
        assert local_http.url(path) in str(e.value) and str(dest) in str(e.value)
        assert _left(tmp_path) == []


def test_deadline_from_environment(local_http, tmp_path, monkeypatch):
    local_http.routes["/slow"] = http_body(DATA[:4000], piece=100, pause=0.05)
    monkeypatch.setenv("ZOO_DOWNLOAD_DEADLINE", "0.3")
    with pytest.raises(ZooError, match="0.3 s deadline"):
        zoo.io.download(local_http.url("/slow"), tmp_path / "f.bin", None)
    monkeypatch.setenv("ZOO_DOWNLOAD_DEADLINE", "soon")
    with pytest.raises(ZooError, match="ZOO_DOWNLOAD_DEADLINE='soon' is not a number of seconds"):
        zoo.io.download(local_http.url("/slow"), tmp_path / "f.bin", None)
    assert _left(tmp_path) == []


def test_http_checksum_mismatch_keeps_old_file(local_http, tmp_path):
    local_http.routes["/f"] = http_body(DATA)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"old")
    with pytest.raises(ZooError, match=rf"download of {local_http.url('/f')} to {dest} has sha256 "
                                       rf"{hashlib.sha256(DATA).hexdigest()}, expected 0+; file discarded"):
        zoo.io.download(local_http.url("/f"), dest, "0" * 64)
    assert dest.read_bytes() == b"old" and _left(tmp_path) == ["f.bin"]


def test_http_error_status_names_url_and_dest(local_http, tmp_path):
    dest = tmp_path / "f.bin"
    with pytest.raises(ZooError, match=rf"could not download file from {local_http.url('/none')} to {dest}: "
                                       "HTTP Error 404"):
        zoo.io.download(local_http.url("/none"), dest, None)
    assert _left(tmp_path) == []


def _tar(path, entries: dict) -> None:
    """A .tar.gz of `entries`: name -> bytes (a file), None (a folder)."""
    with tarfile.open(path, "w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def _serve_archive(local_http, monkeypatch, archive, size=None, dataset="cinic10"):
    local_http.routes["/m/" + archive.name] = http_body(archive.read_bytes())
    files = ((archive.name, _md5(archive)) + ((size,) if size is not None else ()),)
    monkeypatch.setitem(D.SOURCES, dataset, D.Source(files, (local_http.url("/m/"),)))


def test_http_dataset_download_happy_path(local_http, tmp_path, monkeypatch):
    _tar(tmp_path / "a.tar.gz", {"./": None, "./train": None, "./train/x.bin": b"x" * 100, "./test/y.bin": b"y"})
    _serve_archive(local_http, monkeypatch, tmp_path / "a.tar.gz", size=(tmp_path / "a.tar.gz").stat().st_size)
    root = D.download("cinic10", tmp_path / "dl", progress=False)
    assert (root / "train" / "x.bin").read_bytes() == b"x" * 100 and (root / "test" / "y.bin").read_bytes() == b"y"
    assert _left(root) == [D.RECORD, "test", "train"]  # no archive, no temp folder
    assert json.loads((root / D.RECORD).read_text())["a.tar.gz"]["url"] == local_http.url("/m/a.tar.gz")


def test_dataset_size_caps_the_download(local_http, tmp_path, monkeypatch):
    # A known size of 10 bytes caps the download at 10 * 1.1 + 1 MiB: a 3 MiB body is refused.
    (tmp_path / "a.tar.gz").write_bytes(DATA * 3)
    _serve_archive(local_http, monkeypatch, tmp_path / "a.tar.gz", size=10)
    with pytest.raises(ZooError, match=f"more than the {11 + (1 << 20)}-byte cap"):
        D.download("cinic10", tmp_path / "dl", progress=False)
    assert not (tmp_path / "dl").exists()


def test_every_official_file_has_a_known_size():
    sizes = {f.name: f.size for s in D.SOURCES.values() for f in map(D.File._make, s.files)}
    assert sizes["cifar-10-python.tar.gz"] == 170498071 and sizes["t10k-labels-idx1-ubyte.gz"] == 4542
    assert all(isinstance(n, int) and n > 0 for n in sizes.values()), sizes


def test_collision_with_user_folder_never_touches_it(local_http, tmp_path, monkeypatch):
    root = tmp_path / "DIR"
    (root / "train").mkdir(parents=True)
    (root / "train" / "mine.txt").write_text("the user's own file")
    (root / "a.tar.gz").write_text("the user's file named like the archive")
    _tar(tmp_path / "a.tar.gz", {"train/x.bin": b"x", "test/y.bin": b"y"})
    _serve_archive(local_http, monkeypatch, tmp_path / "a.tar.gz")
    with pytest.raises(ZooError) as e:
        D.download("cinic10", root, progress=False)
    msg = str(e.value)
    assert f"cannot unpack into {root}: {root / 'train'} already exists; nothing is overwritten" in msg
    assert local_http.url("/m/a.tar.gz") in msg
    # The user's folder and files are as they were; nothing was moved in (not even the free `test`), nothing left.
    assert _left(root) == ["a.tar.gz", "train"] and _left(root / "train") == ["mine.txt"]
    assert (root / "train" / "mine.txt").read_text() == "the user's own file"
    assert (root / "a.tar.gz").read_text() == "the user's file named like the archive"
    # Once the user's folder is elsewhere, the same root unpacks; the user's file named like the archive stays.
    (root / "train").rename(tmp_path / "moved")
    D.download("cinic10", root, progress=False)
    assert _left(root) == [D.RECORD, "a.tar.gz", "test", "train"]
    assert (root / "a.tar.gz").read_text() == "the user's file named like the archive"


def test_existing_plain_file_refused_before_download(tmp_path, monkeypatch):
    root = tmp_path / "DIR"
    root.mkdir()
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"mine")
    # The mirror does not exist: the refusal comes before any download is tried.
    monkeypatch.setitem(D.SOURCES, "mnist", D.Source((("train-images-idx3-ubyte.gz", None),),
                                                     (f"file://{tmp_path}/nowhere/",), unpack=False))
    with pytest.raises(ZooError, match=f"{root / 'train-images-idx3-ubyte.gz'} already exists and was not "
                                       "downloaded by zoo; nothing is overwritten"):
        D.download("mnist", root, progress=False)
    assert (root / "train-images-idx3-ubyte.gz").read_bytes() == b"mine" and _left(root) == [
        "train-images-idx3-ubyte.gz"]


def _evil(path, kind):
    with tarfile.open(path, "w:gz") as tf:
        ok = tarfile.TarInfo("data/ok.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        if kind in ("parent", "absolute"):
            info = tarfile.TarInfo("data/../../outside.txt" if kind == "parent" else f"{path.parent}/outside.txt")
            info.size = 3
            tf.addfile(info, io.BytesIO(b"bad"))
        else:
            info = tarfile.TarInfo("data/link")
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.linkname = "../../.." if kind == "symlink" else "data/ok.txt"
            tf.addfile(info)
            if kind == "symlink":  # then a file written through the link, out of the tree
                info = tarfile.TarInfo("data/link/outside.txt")
                info.size = 3
                tf.addfile(info, io.BytesIO(b"bad"))


@pytest.mark.parametrize("kind, message", [
    ("parent", "member 'data/../../outside.txt' is not a plain relative path inside"),
    ("absolute", "is not a plain relative path inside"),
    ("symlink", "member 'data/link' is a symbolic link (to '../../..'); links are refused"),
    ("hardlink", "member 'data/link' is a hard link (to 'data/ok.txt'); links are refused"),
])
def test_unsafe_members_refused(tmp_path, monkeypatch, kind, message):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _evil(mirror / "evil.tar.gz", kind)
    monkeypatch.setitem(D.SOURCES, "cinic10", D.Source((("evil.tar.gz", None),), (f"file://{mirror}/",)))
    with pytest.raises(ZooError, match="evil.tar.gz: cannot unpack: ") as e:
        D.download("cinic10", tmp_path / "dl", progress=False)
    assert message in str(e.value)
    assert not list(tmp_path.rglob("outside.txt"))
    assert not (tmp_path / "dl").exists()  # no archive, temp folder or half-unpacked tree


def test_absurd_archives_refused(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _tar(mirror / "many.tar.gz", {f"d/{i}": b"" for i in range(5)})
    _tar(mirror / "big.tar.gz", {"d/zeros": b"\0" * 100_000})  # compresses ~1000:1
    monkeypatch.setattr(D, "MAX_MEMBERS", 4)
    monkeypatch.setattr(D, "MAX_SLACK_BYTES", 0)
    for name, message in (("many.tar.gz", "more than 4 members"), ("big.tar.gz", "more than .* bytes")):
        monkeypatch.setitem(D.SOURCES, "cinic10", D.Source(((name, None),), (f"file://{mirror}/",)))
        with pytest.raises(ZooError, match=f"{name}: cannot unpack: {message}"):
            D.download("cinic10", tmp_path / "dl", progress=False)
        assert not (tmp_path / "dl").exists()


def test_failed_download_keeps_users_empty_root(cifar_mirror, tmp_path):
    (tmp_path / "DIR").mkdir()
    with pytest.raises(ZooError, match="file discarded"):
        D.download("cifar10", tmp_path / "DIR", mirror=f"file://{cifar_mirror}", progress=False)
    assert (tmp_path / "DIR").is_dir() and _left(tmp_path / "DIR") == []  # made by the user: kept, still empty


def test_corrupt_record_is_one_clear_error(tmp_path):
    (tmp_path / "DIR").mkdir()
    (tmp_path / "DIR" / D.RECORD).write_text("{not json")
    with pytest.raises(ZooError, match=f"{tmp_path / 'DIR' / D.RECORD}: unreadable download record"):
        D.download("cifar10", tmp_path / "DIR", progress=False)
