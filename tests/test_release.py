"""Release check: build the sdist, the zoo wheel (from the source tree, as `pip wheel .` does, and from the sdist,
as `pip install zoo-0.1.0.tar.gz` does) and the zoo-weights wheel from a clean copy of the checkout, then check what
they hold and install them into a fresh virtual environment.

Slow (it compiles the extension twice, ~1 minute on 2 cores); offline: every build runs without build isolation
from the test environment's scikit-build-core, pybind11 and setuptools, and pip never asks an index.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WHEEL_BUDGET = 25_000_000  # bytes: the zoo wheel, extension included (issue #25)
SMALL_FILE = 4_000_000  # every weights file the zoo wheel carries is below this
# What no distribution may carry: caches, build outputs, datasets, bytecode, environments, run/report output.
JUNK = re.compile(r"(^|/)(__pycache__|\.pytest_cache|\.ruff_cache|\.benchmarks|\.cache|\.venv|\.git|build|dist|runs|"
                  r"reports|artifacts|[^/]*\.egg-info)(/|$)|\.(pyc|pyo|o|a|onnx|pt|pth|npy|npz|beton|tar|gz|tgz|zip|"
                  r"whl|jpg|jpeg)$|idx[13]-ubyte")

pytestmark = pytest.mark.slow


def _run(args, cwd, env=None, timeout=300) -> str:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "ZOO_", "PYTHON"))}
    e.update(PIP_DISABLE_PIP_VERSION_CHECK="1", CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2), **(env or {}))
    p = subprocess.run([str(a) for a in args], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}\nstdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}")
    return p.stdout


def _pip_wheel(what, out: Path, cwd: Path) -> None:
    _run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index", "-q", "-w", out,
          what], cwd=cwd)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """{sdist, wheel, sdist_wheel, weights_wheel}: built from a copy of the files git tracks (and new files it does not
    ignore), so nothing that happens to lie in the checkout (build/, .cache/, runs/, a venv) can reach them."""
    if not (REPO / ".git").exists():
        pytest.skip("the release check builds from a git checkout")
    tmp = tmp_path_factory.mktemp("release")
    src, dist = tmp / "src", tmp / "dist"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (REPO / rel).is_file():  # a tracked file deleted in the working tree is not part of the copy
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    # The sdist through the backend's own hook (pip makes no sdists, and `build` is not a dependency).
    out = _run([sys.executable, "-c", "import sys; from scikit_build_core.build import build_sdist; "
                "print(build_sdist(sys.argv[1]))", dist], cwd=src)
    sdist = dist / out.splitlines()[-1]  # the hook returns the file's name; the backend prints a banner before it
    _pip_wheel(".", dist, cwd=src)  # what `pip wheel .` in a checkout builds
    (wheel,) = dist.glob("zoo-*.whl")
    from_sdist = tmp / "from-sdist"
    _pip_wheel(sdist, from_sdist, cwd=tmp)  # what `pip install zoo-*.tar.gz` builds
    _pip_wheel(src / "zoo" / "weights", dist, cwd=tmp)
    (weights_wheel,) = dist.glob("zoo_weights-*.whl")
    sizes = {p.name: p.stat().st_size for p in dist.iterdir()}
    print(f"release artifacts: {sizes}")
    return {"sdist": sdist, "wheel": wheel, "sdist_wheel": next(from_sdist.glob("zoo-*.whl")),
            "weights_wheel": weights_wheel, "src": src, "tmp": tmp}


def _names(path: Path) -> list[str]:
    if path.suffix == ".whl":
        return zipfile.ZipFile(path).namelist()
    with tarfile.open(path) as tf:
        return [m.name.split("/", 1)[1] for m in tf.getmembers() if m.isfile()]  # without the zoo-0.1.0/ prefix


def test_sizes_and_no_junk(built):
    assert built["wheel"].stat().st_size <= WHEEL_BUDGET, built["wheel"].stat().st_size
    for kind in ("sdist", "wheel", "sdist_wheel", "weights_wheel"):
        names = _names(built[kind])
        junk = [n for n in names if JUNK.search(n)]
        assert not junk, (kind, junk)
    wheel = _names(built["wheel"])
    assert sorted(wheel) == sorted(_names(built["sdist_wheel"]))  # the sdist builds the same wheel
    assert sum(n.startswith("zoo/_native") and n.endswith(".so") for n in wheel) == 1  # the extension is in it
    sdist = _names(built["sdist"])
    for must in ("pyproject.toml", "CMakeLists.txt", "csrc/module.cpp", "zoo/weights/manifest.json", "README.md"):
        assert must in sdist, must
    # The zoo-weights project is its own distribution: neither its pyproject nor its files are in zoo's.
    assert not [n for n in sdist + wheel if n.startswith("zoo/weights/") and n.endswith(".toml")]
    assert sorted(n for n in sdist if n.startswith("zoo/weights/")) == sorted(n for n in wheel
                                                                               if n.startswith("zoo/weights/"))
    weights = [n for n in _names(built["weights_wheel"]) if not n.startswith("zoo_weights-")]
    assert all(n.startswith("zoo_weights/") for n in weights) and "zoo_weights/__init__.py" not in weights


def test_every_manifest_entry_resolves_from_the_artifacts(built):
    zw, ww = zipfile.ZipFile(built["wheel"]), zipfile.ZipFile(built["weights_wheel"])
    manifest = json.loads(zw.read("zoo/weights/manifest.json"))
    assert zw.read("zoo/weights/manifest.json") == ww.read("zoo_weights/manifest.json")
    assert manifest == json.loads((REPO / "zoo" / "weights" / "manifest.json").read_text())
    in_zoo = {n.rsplit("/", 1)[1] for n in zw.namelist() if n.startswith("zoo/weights/") and n.endswith(".safetensors")}
    in_dist = {n.rsplit("/", 1)[1] for n in ww.namelist() if n.endswith(".safetensors")}
    files = {e["file"] for e in manifest["weights"].values()}
    assert not in_zoo & in_dist, in_zoo & in_dist  # each file in exactly one distribution ...
    assert in_zoo | in_dist == files  # ... every manifest file in one, and no file the manifest does not name
    for tag, e in manifest["weights"].items():
        z, name = (zw, f"zoo/weights/{e['file']}") if e["file"] in in_zoo else (ww, f"zoo_weights/{e['file']}")
        data = z.read(name)
        assert (len(data), hashlib.sha256(data).hexdigest()) == (e["size"], e["sha256"]), tag
        if z is zw:
            assert e["size"] < SMALL_FILE, (tag, e["size"])


def test_fresh_environment_from_the_wheels(built):
    """`pip install` of the zoo wheel alone into a new venv (dependencies from the test environment's
    site-packages): a small tag loads, a large one is refused with the promised message; `weights pull --from`
    a checkout's folder, then the zoo-weights wheel, make the rest load and verify."""
    tmp = built["tmp"]
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    vpy = venv / "bin" / "python"
    site = Path(_run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).strip())
    # Path lines in a .pth only extend sys.path (the test environment's own .pth files, its editable zoo among them,
    # are not run), after the venv's own site-packages: `import zoo` finds the installed wheel.
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_test_env.pth").write_text("".join(f"{p}\n" for p in deps))

    def install(wheel):
        _run([sys.executable, "-m", "pip", "--python", vpy, "install", "--no-deps", "--no-index", "-q", wheel], cwd=tmp)

    install(built["wheel"])
    home = tmp / "home"
    env = {"ZOO_HOME": str(home), "PYTHONNOUSERSITE": "1"}
    script = (
        "import zoo, zoo.weights as W\n"
        "from zoo.data import native\n"
        "from zoo.errors import ZooError\n"
        "print(W.__file__)\n"
        "print(native.features()['native'])\n"
        "print(zoo.load('lenet5.mnist').zoo_meta['tag'])\n"
        "try:\n"
        "    zoo.load('resnet18.cifar10')\n"
        "except ZooError as e:\n"
        "    print(e)\n"
    )
    lines = _run([vpy, "-c", script], cwd=tmp, env=env).splitlines()
    pkg = Path(lines[0]).parent / "weights"
    assert pkg.is_relative_to(site), lines[0]
    assert lines[1:4] == ["True", "lenet5.mnist",
                          f"weights file resnet18.cifar10.safetensors for resnet18.cifar10 is not installed (looked "
                          f"in {pkg}, {home / 'weights'} and the zoo-weights distribution (not installed)) and no "
                          "download URL is configured (ZOO_WEIGHTS_URL or the manifest's url); get it with: python -m "
                          "zoo weights pull resnet18.cifar10 --from DIR_OR_URL (a zoo checkout's zoo/weights folder "
                          "or a mirror), or install every large file with: pip install --no-build-isolation "
                          "./zoo/weights (in a zoo checkout)"]
    # The wheel plus `weights pull --from` a checkout's folder (the README's second offline route) ...
    out = _run([vpy, "-m", "zoo", "weights", "pull", "resnet9.*", "--from", built["src"] / "zoo" / "weights",
                "--no-progress"], cwd=tmp, env=env)
    assert out.splitlines()[-1] == "3 pulled, 0 already installed"
    load = "import zoo, sys; print(*(zoo.load(t).zoo_meta['tag'] for t in sys.argv[1:]))"
    assert _run([vpy, "-c", load, "resnet9.cifar10"], cwd=tmp, env=env).split() == ["resnet9.cifar10"]
    # ... and both distributions (the first): every manifest entry is then installed and verifies.
    install(built["weights_wheel"])
    out = _run([vpy, "-m", "zoo", "weights", "verify"], cwd=tmp, env=env).splitlines()
    assert out[-1] == "33 installed files match the manifest"  # 30 entries; the 3 pulled ResNet-9s twice
    where = {line.split()[1]: line.split()[2] for line in out[:-1] if "ZOO_HOME" not in line}
    assert len(where) == 30 and set(where.values()) == {"package", "zoo-weights"}
    assert where["lenet5.mnist"] == "package" and where["resnet18.cifar10"] == "zoo-weights"
    assert _run([vpy, "-c", load, *sorted(where)], cwd=tmp, env=env).split() == sorted(where)  # every tag loads
