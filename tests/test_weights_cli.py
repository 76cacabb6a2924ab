"""Weights outside the wheel: lookup order (package, $ZOO_HOME, the zoo-weights distribution, download), the one
error for a missing file, and `python -m zoo weights list|pull|verify` from a folder and a 127.0.0.1 server."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

import zoo
from zoo import weights as W
from zoo.cli import main
from zoo.errors import ZooError


def _meta(model_name: str) -> dict:
    return {"tag": f"{model_name}.mnist", "model": model_name, "dataset": "mnist",
            "classes": [str(i) for i in range(10)], "num_classes": 10, "mean": [0.13], "std": [0.31],
            "input_size": [1, 28, 28], "config_overrides": {}, "metrics": {"top1": 0.5}, "recipe": {"name": "adam"}}


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A private manifest (ZOO_MANIFEST) with two entries, as an installed zoo wheel has them: lenet5.mnist ships
    beside the manifest, mlp2.mnist (a "large" file) does not; its file is kept in `origin/` (a checkout's
    zoo/weights). $ZOO_HOME is empty and private to the test."""
    torch.manual_seed(0)
    pkg, origin = tmp_path / "pkg", tmp_path / "origin"
    pkg.mkdir()
    for name in ("lenet5", "mlp2"):
        src = tmp_path / "runs" / name / "model.safetensors"
        W.save_weights(zoo.create_model(name), src, _meta(name))
        W.publish(src, pkg / "manifest.json")
    shutil.copytree(pkg, origin)
    (pkg / "mlp2.mnist.safetensors").unlink()
    monkeypatch.setenv("ZOO_MANIFEST", str(pkg / "manifest.json"))
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_WEIGHTS_URL", raising=False)
    return pkg, origin, tmp_path / "home" / "weights"


def _missing(store) -> str:
    pkg, _, home = store
    return (f"weights file mlp2.mnist.safetensors for mlp2.mnist is not installed (looked in {pkg}, {home} and the "
            "zoo-weights distribution (not installed)) and no download URL is configured (ZOO_WEIGHTS_URL or the "
            "manifest's url); get it with: python -m zoo weights pull mlp2.mnist --from DIR_OR_URL (a zoo "
            "checkout's zoo/weights folder or a mirror), or install every large file with: "
            "pip install --no-build-isolation ./zoo/weights (in a zoo checkout)")


def _fake_weights_dist(site, files: dict) -> None:
    """An installed zoo-weights distribution in `site` (dist-info + RECORD), whose package has an __init__.py
    that would leave a marker file if anything imported it."""
    pkg = site / "zoo_weights"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"open({str(site / 'IMPORTED')!r}, 'w').close()\n")
    for name, src in files.items():
        shutil.copyfile(src, pkg / name)
    info = site / "zoo_weights-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-weights\nVersion: 0.1.0\n")
    (info / "RECORD").write_text("".join(f"zoo_weights/{n},,\n" for n in ["__init__.py", *files])
                                 + "zoo_weights-0.1.0.dist-info/RECORD,,\n")


def test_missing_large_file_is_one_error_naming_tag_file_and_command(store):
    with pytest.raises(ZooError) as e:
        zoo.load("mlp2.mnist")
    assert str(e.value) == _missing(store)
    assert zoo.load("lenet5.mnist").zoo_meta["tag"] == "lenet5.mnist"  # the small one ships beside the manifest


def test_lookup_order_package_home_distribution_download(store, tmp_path, monkeypatch):
    pkg, origin, home = store
    src = origin / "mlp2.mnist.safetensors"
    site = tmp_path / "site"
    _fake_weights_dist(site, {"mlp2.mnist.safetensors": src})
    monkeypatch.syspath_prepend(str(site))
    dist_copy = site / "zoo_weights" / "mlp2.mnist.safetensors"
    assert W.copies("mlp2.mnist") == [("zoo-weights", dist_copy)]
    assert W.weights_file("mlp2.mnist")[0] == dist_copy
    assert zoo.load("mlp2.mnist").zoo_meta["tag"] == "mlp2.mnist"
    assert not (site / "IMPORTED").exists()  # found through its RECORD: nothing of it was imported
    home.mkdir(parents=True)
    shutil.copyfile(src, home / src.name)
    shutil.copyfile(src, pkg / src.name)
    assert W.copies("mlp2.mnist") == [("package", pkg / src.name), ("ZOO_HOME", home / src.name),
                                      ("zoo-weights", dist_copy)]
    assert W.weights_file("mlp2.mnist")[0] == pkg / src.name
    (pkg / src.name).unlink()
    assert W.weights_file("mlp2.mnist")[0] == home / src.name
    # A stale distribution (built from another manifest) is refused with what to do about it, not used silently.
    (home / src.name).unlink()
    dist_copy.write_bytes(b"stale")
    with pytest.raises(ZooError, match=rf"weights file {dist_copy} has sha256 .* reinstall the zoo-weights "
                                       r"distribution built with this zoo's manifest"):
        zoo.load("mlp2.mnist")


def test_download_prefers_zoo_weights_url_over_the_entry_url(store, local_http, monkeypatch):
    from .helpers import http_body

    pkg, origin, home = store
    data = (origin / "mlp2.mnist.safetensors").read_bytes()
    local_http.routes["/mirror/mlp2.mnist.safetensors"] = http_body(data)
    entries = json.loads((pkg / "manifest.json").read_text())
    entries["weights"]["mlp2.mnist"]["url"] = local_http.url("/gone")  # 404: must not be asked
    (pkg / "manifest.json").write_text(json.dumps(entries))
    monkeypatch.setenv("ZOO_WEIGHTS_URL", local_http.url("/mirror/"))
    path, _ = W.weights_file("mlp2.mnist", progress=False)
    assert path == home / "mlp2.mnist.safetensors" and path.read_bytes() == data
    assert sorted(p.name for p in home.iterdir()) == ["mlp2.mnist.safetensors"]


def test_pull_from_a_folder_then_verify_and_list(store, capsys):
    pkg, origin, home = store
    assert main(["weights", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{'tag':<24}{'size':>11}  status     where",
        f"lenet5.mnist{'':<12}{W.read_manifest()['lenet5.mnist']['size'] / 1e6:>8.2f} MB  installed  "
        f"package: {pkg / 'lenet5.mnist.safetensors'}",
        f"mlp2.mnist{'':<14}{W.read_manifest()['mlp2.mnist']['size'] / 1e6:>8.2f} MB  missing    "
        "- (python -m zoo weights pull mlp2.mnist)",
        f"2 files, {sum(e['size'] for e in W.read_manifest().values()) / 1e6:.1f} MB; installed "
        f"{W.read_manifest()['lenet5.mnist']['size'] / 1e6:.1f} MB",
    ]
    assert main(["weights", "pull", "--all", "--from", str(origin), "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"lenet5.mnist: already installed: {pkg / 'lenet5.mnist.safetensors'}",
        f"mlp2.mnist: pulled to {home / 'mlp2.mnist.safetensors'}",
        "1 pulled, 1 already installed",
    ]
    assert (home / "mlp2.mnist.safetensors").read_bytes() == (origin / "mlp2.mnist.safetensors").read_bytes()
    assert zoo.load("mlp2.mnist").zoo_meta["tag"] == "mlp2.mnist"
    assert main(["weights", "pull", "mlp*", "--from", str(origin)]) == 0  # a wildcard; nothing left to fetch
    assert capsys.readouterr().out.splitlines()[-1] == "0 pulled, 1 already installed"
    assert main(["weights", "verify"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"ok  lenet5.mnist{'':<12}package      {pkg / 'lenet5.mnist.safetensors'}",
        f"ok  mlp2.mnist{'':<14}ZOO_HOME     {home / 'mlp2.mnist.safetensors'}",
        "2 installed files match the manifest",
    ]


def test_verify_names_a_corrupt_copy_and_pull_replaces_it(store, capsys):
    _, origin, home = store
    home.mkdir(parents=True)
    bad = home / "mlp2.mnist.safetensors"
    bad.write_bytes(b"corrupt")
    assert main(["weights", "verify"]) == 2
    out, err = capsys.readouterr()
    assert f"BAD mlp2.mnist{'':<14}ZOO_HOME     {bad}" in out.splitlines()
    assert err == (f"error: 1 of 2 installed weights files do not match the manifest's sha256 ({bad}); delete them "
                   "and run python -m zoo weights pull\n")
    with pytest.raises(ZooError, match=rf"weights file {bad} has sha256 .*; delete it and retry"):
        zoo.load("mlp2.mnist")
    assert main(["weights", "pull", "mlp2.mnist"]) == 2  # no source: the error is the bad copy, not "missing"
    assert capsys.readouterr().err.startswith(f"error: weights file {bad} has sha256 ")
    assert main(["weights", "pull", "mlp2.mnist", "--from", str(origin), "--no-progress"]) == 0
    assert bad.read_bytes() == (origin / bad.name).read_bytes()
    assert main(["weights", "verify"]) == 0


def test_pull_refuses_to_hide_a_corrupt_package_copy(store, capsys):
    """A pulled file in $ZOO_HOME would never be used while a bad copy beside the manifest comes first: refused."""
    pkg, origin, home = store
    (pkg / "mlp2.mnist.safetensors").write_bytes(b"corrupt")
    assert main(["weights", "pull", "mlp2.mnist", "--from", str(origin)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: weights file {pkg / 'mlp2.mnist.safetensors'} has sha256 ") and \
        err.endswith("the file is corrupt or was replaced; delete it and retry\n")
    assert not home.exists()


def test_pull_over_http_checks_sha256_and_leaves_nothing(store, local_http, capsys):
    from .helpers import http_body

    _, origin, home = store
    data = (origin / "mlp2.mnist.safetensors").read_bytes()
    local_http.routes["/good/mlp2.mnist.safetensors"] = http_body(data)
    local_http.routes["/evil/mlp2.mnist.safetensors"] = http_body(data[:-1] + bytes([data[-1] ^ 1]))
    url = local_http.url("/evil")
    assert main(["weights", "pull", "mlp2.mnist", "--from", url, "--no-progress"]) == 2
    assert f"download of {url}/mlp2.mnist.safetensors to {home / 'mlp2.mnist.safetensors'} has sha256" in \
        capsys.readouterr().err
    assert not home.exists() or not list(home.iterdir())  # no temp file, no half-written weights
    assert main(["weights", "pull", "mlp2.mnist", "--from", local_http.url("/good/"), "--no-progress"]) == 0
    assert (home / "mlp2.mnist.safetensors").read_bytes() == data


@pytest.mark.parametrize("argv, err", [
    (["weights", "pull"], "weights pull: name TAGs (or wildcards) or pass --all, not both"),
    (["weights", "pull", "mlp2.mnist", "--all"], "weights pull: name TAGs (or wildcards) or pass --all, not both"),
    (["weights", "pull", "mlp3.mnist"],
     "no weights match 'mlp3.mnist'; did you mean mlp2.mnist, lenet5.mnist? manifest tags: lenet5.mnist, mlp2.mnist"),
    (["weights", "pull", "resnet*"], "no weights match 'resnet*'; manifest tags: lenet5.mnist, mlp2.mnist"),
    (["weights", "pull", "mlp2.mnist", "--from", "ftp://host/w"],
     "--from 'ftp://host/w': only http://, https:// and file:// URLs (or a folder) are supported"),
    (["weights", "pull", "mlp2.mnist", "--from", "no/such/dir"],
     "--from 'no/such/dir' is neither a folder nor an http(s):// or file:// URL"),
])
def test_pull_bad_arguments_are_one_error(store, argv, err, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err == f"error: {err}\n"
    assert not store[2].exists()


def test_pull_without_a_source_or_from_an_incomplete_folder(store, tmp_path, capsys):
    assert main(["weights", "pull", "mlp2.mnist"]) == 2
    assert capsys.readouterr().err == f"error: {_missing(store)}\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["weights", "pull", "mlp2.mnist", "--from", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --from {empty}: no mlp2.mnist.safetensors there (needed for mlp2.mnist)\n"
    assert not store[2].exists()


def test_weights_help_lists_the_subcommands():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "zoo", "weights", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "{list,pull,verify}" in out
