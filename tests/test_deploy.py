"""Exported models in the runtimes people deploy to, outside zoo: OpenCV DNN, onnxruntime-node, libtorch C++ and
onnxruntime-web in headless Chromium. Each runs the example program of docs/deploy.md (the file itself) on 100 real
CIFAR-10 test images and must give the same top-1 as Python ONNX Runtime on every one. The test command
(tests/bootstrap.sh) installs the toolchains where it can; each test skips, naming what is missing, where it could not.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from export import load_exported, to_onnx, to_torchscript

from .conftest import REPO, SHARED, run_cli

TAG = "lenet5_bn.cifar10"
PER_CLASS = 10
DOCS = REPO / "docs" / "deploy"
NODE_MODULES = REPO / ".cache" / "node" / "node_modules"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """100 real CIFAR-10 test images (10 a class) as the JPEG files of the archive, and the same pixels (PIL's
    decode) as PNG and PPM for runtimes without a JPEG decoder; with their labels."""
    from PIL import Image

    archive = SHARED / "cifar10-jpeg.tar.gz"
    if not archive.exists():
        pytest.skip(f"real CIFAR-10 archive {archive} not present")
    root = tmp_path_factory.mktemp("deploy_images")
    classes = zoo.load(TAG).zoo_meta["classes"]
    taken: dict[str, int] = {}
    files = []
    with tarfile.open(archive) as tf:
        for m in tf:  # the test split comes first in the archive: stop once every class has its images
            parts = m.name.split("/")
            if len(parts) != 4 or parts[1] != "test" or not m.isfile() or taken.get(parts[2], 0) >= PER_CLASS:
                if len(files) == PER_CLASS * len(classes):
                    break
                continue
            taken[parts[2]] = taken.get(parts[2], 0) + 1
            jpg = root / f"{parts[2]}_{parts[3]}"
            jpg.write_bytes(tf.extractfile(m).read())
            files.append((jpg, classes.index(parts[2])))
    out = {"jpg": [], "png": [], "ppm": [], "labels": []}
    for jpg, label in files:
        with Image.open(jpg) as im:
            rgb = im.convert("RGB")
        rgb.save(jpg.with_suffix(".png"))
        rgb.save(jpg.with_suffix(".ppm"))
        for k in ("jpg", "png", "ppm"):
            out[k].append(jpg.with_suffix("." + k))
        out["labels"].append(label)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy_models")
    model = zoo.load(TAG)
    x = torch.zeros(1, *model.zoo_meta["input_size"])
    return {"onnx": to_onnx(model, x, out / f"{TAG}.onnx"), "pt": to_torchscript(model, x, out / f"{TAG}.pt")}


def reference(model: Path, files: list[Path]) -> list[int]:
    """Top-1 of Python ONNX Runtime on zoo's own preprocessing (PIL decode, zoo.preprocess_for)."""
    run = load_exported(model)
    with torch.inference_mode():
        return run(zoo.preprocess_for(run)([str(f) for f in files])).argmax(1).tolist()


def predictions(stdout: str, files: list[Path]) -> list[int]:
    """The example programs print `file <TAB> index <TAB> class <TAB> probability`, one line an image, in order."""
    rows = [line.split("\t") for line in stdout.strip().splitlines()]
    assert [r[0] for r in rows] == [str(f) for f in files], stdout[:500]
    return [int(r[1]) for r in rows]


def check(got: list[int], model: Path, files: list[Path], labels: list[int]) -> None:
    ref = reference(model, files)
    assert got == ref, [i for i, (a, b) in enumerate(zip(got, ref)) if a != b]
    # And the model is the trained one (the JPEG-recompressed CIFAR-10 costs a few points): not all one class.
    assert np.mean(np.array(got) == np.array(labels)) > 0.5


def test_opencv_dnn(images, exported):
    """cv2.imread (BGR) on the JPEG files, converted to RGB as the contract says; cv2.dnn runs the ONNX file."""
    pytest.importorskip("cv2", reason="opencv-python-headless not installed (pip install opencv-python-headless)")
    p = subprocess.run([sys.executable, str(DOCS / "infer_opencv.py"), str(exported["onnx"]),
                        *map(str, images["jpg"])], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    check(predictions(p.stdout, images["jpg"]), exported["onnx"], images["png"], images["labels"])


def test_onnxruntime_node(images, exported, tmp_path):
    node = shutil.which("node")
    if not node or not (NODE_MODULES / "onnxruntime-node").is_dir():
        pytest.skip("node or onnxruntime-node not installed (npm install --prefix .cache/node onnxruntime-node)")
    # The program resolves `onnxruntime-node` from its own folder: run the same file from one beside node_modules.
    shutil.copy(DOCS / "infer.mjs", tmp_path / "infer.mjs")
    (tmp_path / "node_modules").symlink_to(NODE_MODULES)
    p = subprocess.run([node, str(tmp_path / "infer.mjs"), str(exported["onnx"]), *map(str, images["png"])],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    check(predictions(p.stdout, images["png"]), exported["onnx"], images["png"], images["labels"])


@functools.cache
def build_cpp() -> Path:
    """docs/deploy/infer.cpp built against the torch wheel's libtorch (its headers, libraries and C++ ABI flag);
    cached by source and torch version, since the build takes a minute on 2 cores."""
    gxx = shutil.which("g++")
    tdir = Path(torch.__file__).parent
    if not gxx or not (tdir / "include" / "torch" / "script.h").exists():
        pytest.skip("g++ or the torch wheel's C++ headers (torch/include) not available")
    src = DOCS / "infer.cpp"
    key = hashlib.sha256(src.read_bytes() + torch.__version__.encode()).hexdigest()[:16]
    exe = REPO / ".cache" / "deploy" / f"infer-{key}"
    if not exe.exists():
        exe.parent.mkdir(parents=True, exist_ok=True)
        abi = int(torch.compiled_with_cxx11_abi())
        tmp = exe.with_name(exe.name + f".tmp{os.getpid()}")
        p = subprocess.run([gxx, "-std=c++20", "-O1", f"-D_GLIBCXX_USE_CXX11_ABI={abi}", str(src), "-o", str(tmp),
                            f"-I{tdir}/include", f"-I{tdir}/include/torch/csrc/api/include", f"-L{tdir}/lib",
                            f"-Wl,-rpath,{tdir}/lib", "-ltorch", "-ltorch_cpu", "-lc10"],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        os.replace(tmp, exe)
    return exe


def test_libtorch_cpp(images, exported):
    exe = build_cpp()
    p = subprocess.run([str(exe), str(exported["pt"]), *map(str, images["ppm"])], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    check(predictions(p.stdout, images["ppm"]), exported["onnx"], images["png"], images["labels"])
    bad = subprocess.run([str(exe), str(exported["pt"]), str(images["png"][0])], capture_output=True, text=True)
    assert bad.returncode == 1 and "not a binary 8-bit PPM" in bad.stderr


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_onnxruntime_web_in_chromium(images, tmp_path):
    """`python -m export web` writes the folder; a static server on 127.0.0.1 serves it; headless Chromium runs the
    page's batch mode (?images=list.json) and writes the top-1 of each image into #results."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium not installed (apt-get install chromium)")
    if not (NODE_MODULES / "onnxruntime-web" / "dist").is_dir():
        pytest.skip("onnxruntime-web not installed (npm install --prefix .cache/node onnxruntime-web)")
    web = tmp_path / "web"
    run_cli("-m", "export", "web", TAG, "--out", str(web))
    (web / "img").mkdir()
    for f in images["png"]:
        shutil.copy(f, web / "img" / f.name)
    (web / "list.json").write_text(json.dumps([f"img/{f.name}" for f in images["png"]]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(web)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html?images=list.json"
        p = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync", "--no-first-run", "--no-proxy-server",
                            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=60000", "--dump-dom",
                            url], capture_output=True, text=True, timeout=180)
    finally:
        server.shutdown()
    found = re.search(r'<pre id="results">(.*?)</pre>', p.stdout, re.S)
    assert found and found.group(1).startswith("{"), (found and found.group(1), p.stderr[-2000:])
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result["tag"] == TAG
    check(result["predictions"], web / "model.onnx", images["png"], images["labels"])
    # The page's own display of the first image: the top-5 classes with probabilities, the best one first.
    classes = zoo.load(TAG).zoo_meta["classes"]
    top5 = result["top5"]
    assert len(top5) == 5 and top5[0][0] == classes[result["predictions"][0]]
    pct = [float(p.rstrip("%")) for _, p in top5]
    assert pct == sorted(pct, reverse=True) and 0 < sum(pct) <= 100.5 and all(p.endswith("%") for _, p in top5)


def test_deploy_md_shows_the_programs_the_tests_run():
    """docs/deploy.md shows each example program verbatim (the files above run), and the page template by path."""
    md = (REPO / "docs" / "deploy.md").read_text()
    for name in ("infer_opencv.py", "infer.mjs", "infer.cpp"):
        assert (DOCS / name).read_text().strip() in md, f"docs/deploy.md does not show docs/deploy/{name} verbatim"
    assert "export/web/index.html" in md and "## Metadata schema" in md
