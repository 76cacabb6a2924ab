"""The CLIs as a user runs them, the reports they write, and the HTML in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from .conftest import run_cli
from .helpers import make_cached_split, write_mnist


def test_info_and_list():
    out = run_cli("-m", "zoo", "info").stdout
    assert "native extension:" in out and "torch " in out and "devices: cpu" in out and "cpu bf16: " in out
    assert "auto = onnxruntime on CPU, torch on CUDA" in out
    out = run_cli("-m", "zoo", "list").stdout
    assert "resnet18" in out and "lenet5_bn" in out and "fast_lenet" in out
    assert "usage" in run_cli("-m", "zoo", "--help").stdout
    out = run_cli("-m", "zoo", "list", "fast_r*", "--recipes").stdout.splitlines()
    assert out[0].startswith("defaults: optimizer=adam, lr=0.001") and len(out) == 3
    assert out[1].startswith("fast_resnet9") and "lr=0.4" in out[1] and "label_smoothing=0.2" in out[1]
    from zoo.cards import recipe_label as _recipe_label
    from zoo.recipes import RECIPES

    rec = RECIPES["fast_mlp"].to_dict() | {"name": "fast_mlp", "augment": "flip", "epochs": 40, "seed": 0}
    assert _recipe_label(rec, 40) == "fast_mlp, 40 ep, augment=flip"  # what the run changed is shown
    assert _recipe_label({"name": None, "lr": 0.1}, 3) == "custom, 3 ep"
    assert _recipe_label(rec | {"init": "zoo:mlp2.mnist", "train_last": 2}, 5) == \
        "fast_mlp, 5 ep, augment=flip, init=zoo:mlp2.mnist, train_last=2"  # a fine-tune names its start


def test_ingest_cli_and_errors(tmp_path, data_home):
    write_mnist(tmp_path / "m")
    out = run_cli("-m", "zoo", "ingest", "mnist", "--root", str(tmp_path / "m"), "--allow-partial",
                  env={"ZOO_DATA": str(data_home)})  # 200 of MNIST's 60000 images: marked partial
    assert "mnist/train: 200 images" in out.stdout and "PARTIAL (published: 60000)" in out.stdout
    bad = run_cli("-m", "zoo", "ingest", "mnist", "--root", str(tmp_path / "nope"), check=False)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("-m", "zoo", "train", "lenet7", "--dataset", "mnist", check=False)
    assert bad.returncode == 2 and "lenet5" in bad.stderr


def _browser_check(html_path, tmp_path) -> None:
    """Load the page in headless Chromium and check that every image decoded (naturalWidth > 0)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium not installed (apt-get install chromium)")
    probe = tmp_path / "probe.html"
    probe.write_text(html_path.read_text().replace(
        "</body>", "<script>window.onload=()=>{const i=[...document.images];document.title="
                   "'IMAGES '+i.length+' BROKEN '+i.filter(x=>!(x.complete&&x.naturalWidth>0)).length;}</script></body>"))
    p = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                        probe.as_uri()], capture_output=True, text=True, timeout=120)
    title = p.stdout.split("<title>")[1].split("</title>")[0]
    n, broken = int(title.split()[1]), int(title.split()[3])
    assert n >= 5 and broken == 0, title


def test_eval_compare_report(tmp_path, data_home):
    make_cached_split("cifar10", n=300, size=32, chans=3, split="train")
    make_cached_split("cifar10", n=300, size=32, chans=3, split="test", seed=2)
    out = tmp_path / "rep"
    p = run_cli("-m", "zoo", "eval", "lenet5.cifar10", "--compare", "torch,torchscript,onnxruntime", "--out",
                str(out), env={"ZOO_DATA": str(data_home)})
    assert "agreement_with_torch=1" in p.stdout
    data = json.loads((out / "report.json").read_text())
    assert [r["agreement_with_torch"] for r in data["comparison"]["rows"]] == [1.0, 1.0, 1.0]
    md = (out / "report.md").read_text()
    assert "Backend comparison" in md and "Per-class metrics" in md
    figs = sorted(p.name for p in (out / "figures").iterdir())
    assert any("t_SNE" in f for f in figs) and any("activation" in f for f in figs)
    assert any("confusion" in f for f in figs) and any("misclassified" in f for f in figs)
    run_cli("-m", "export", "onnx", "lenet5.cifar10", "--out", str(tmp_path), "--no-verify")
    onnx_file = str(tmp_path / "lenet5.cifar10.onnx")
    p = run_cli("-m", "zoo", "eval", onnx_file, "--no-figures", "--out", str(tmp_path / "rep2"),
                env={"ZOO_DATA": str(data_home)})
    assert "[onnxruntime, cpu]" in p.stdout  # the runtime that produced the numbers
    bad = run_cli("-m", "zoo", "eval", onnx_file, "--compare", "torch,onnxruntime", check=False,
                  env={"ZOO_DATA": str(data_home)})
    assert bad.returncode == 2 and "evaluate its weights" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("-m", "zoo", "eval", "lenet5.cifar10", "--compare", "torch,tensorrt", check=False,
                  env={"ZOO_DATA": str(data_home)})
    assert bad.returncode == 2 and "--compare: unknown backend 'tensorrt'" in bad.stderr and "top-1" not in bad.stdout
    bad = run_cli("-m", "zoo", "eval", str(tmp_path / "missing.onnx"), "--dataset", "cifar10", check=False)
    assert bad.returncode == 2 and "missing.onnx does not exist" in bad.stderr and "Traceback" not in bad.stderr
    _browser_check(out / "report.html", tmp_path)  # last: it skips the test where no browser is installed


@pytest.mark.slow
def test_experiment_report(tmp_path, data_home):
    make_cached_split("gen", n=400, size=28, chans=1, split="train")
    make_cached_split("gen", n=100, size=28, chans=1, split="test", seed=3)
    p = run_cli("-m", "zoo", "experiment", "lenet5", "--dataset", "gen", "--epochs", "1", "--out", str(tmp_path),
                "--no-progress", env={"ZOO_DATA": str(data_home)})
    assert "report:" in p.stdout
    data = json.loads((tmp_path / "report.json").read_text())
    assert [r["variant"] for r in data["rows"]][:2] == ["base (Adam 1e-3)", "lr 0.01"] and len(data["rows"]) == 6
    html = (tmp_path / "report.html").read_text()
    assert html.count("<img") == 13  # seed-band curves + a confusion matrix and a misclassified gallery per variant
