"""Nothing finished is replaced silently: a trained run, or a report of another source."""

from __future__ import annotations

import pytest

from zoo.cli import main
from zoo.engine import train
from zoo.errors import ZooError

from .helpers import make_cached_split


@pytest.fixture
def tiny(data_home):
    make_cached_split("gen", n=64, size=28, chans=1, split="train")
    make_cached_split("gen", n=20, size=28, chans=1, split="test", seed=1)
    return data_home


def test_train_refuses_a_finished_run_unless_resume_or_overwrite(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default run folder, runs/MODEL.DATASET, is relative to it
    kw = dict(epochs=1, batch_size=32, progress=False, evaluate_test=False)
    train("mlp2", "gen", "adam", **kw)
    run = tmp_path / "runs" / "mlp2.gen"
    weights = (run / "model.safetensors").read_bytes()
    before = sorted(p.name for p in run.iterdir())
    import zoo.engine as engine

    real_open_split = engine.open_split

    def no_data(*a, **k):
        raise AssertionError("the refusal must come before any data is opened")

    monkeypatch.setattr(engine, "open_split", no_data)
    msg = (r"--out runs/mlp2\.gen holds a finished run \(model\.safetensors, result\.json\); pass --resume to continue "
           r"it, --overwrite to replace it \(overwrite=True in Python\), or another --out")
    with pytest.raises(ZooError, match=msg):
        train("mlp2", "gen", "adam", **kw)
    with pytest.raises(ZooError, match="--resume and --overwrite .* contradict"):
        train("mlp2", "gen", "adam", resume=True, overwrite=True, **kw)
    capsys.readouterr()
    assert main(["train", "mlp2", "--dataset", "gen", "--recipe", "adam", "--epochs", "1", "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert "error: --out runs/mlp2.gen holds a finished run" in err and "--overwrite" in err and "trained" not in out
    assert (run / "model.safetensors").read_bytes() == weights and sorted(p.name for p in run.iterdir()) == before
    monkeypatch.setattr(engine, "open_split", real_open_split)
    assert main(["train", "mlp2", "--dataset", "gen", "--recipe", "adam", "--epochs", "1", "--batch-size", "32",
                 "--seed", "1", "--no-progress", "--overwrite"]) == 0
    assert "note: --overwrite: replacing the finished run in runs/mlp2.gen" in capsys.readouterr().out
    assert (run / "model.safetensors").read_bytes() != weights  # the new run's (another seed) replaced it


def test_an_exported_files_report_does_not_replace_the_tags_silently(data_home, tmp_path, capsys):
    """`zoo eval FILE.onnx` goes to reports/TAG-onnx by default; sent into the tag's report folder it says what it
    replaced, and none of the earlier report's figures (t-SNE, activations) stay beside it."""
    import json

    import torch

    import zoo
    from export import to_onnx

    make_cached_split("cifar10", n=100, size=32, chans=3, split="test", seed=2)
    out = tmp_path / "rep"
    assert main(["eval", "lenet5.cifar10", "--compare", "torch,torchscript", "--out", str(out)]) == 0
    figs = sorted(p.name for p in (out / "figures").iterdir())
    assert any("t_SNE" in f for f in figs) and any("activation" in f for f in figs)
    onnx = to_onnx(zoo.load("lenet5.cifar10"), torch.zeros(1, 3, 32, 32), tmp_path / "lenet5.cifar10.onnx",
                   verify=False)
    capsys.readouterr()
    assert main(["eval", str(onnx), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"note: replaced the report of lenet5.cifar10 (torch, torchscript) in {out}; use --out to keep both" in stdout
    figs = sorted(p.name for p in (out / "figures").iterdir())
    assert figs and not any("t_SNE" in f or "activation" in f for f in figs)  # an ONNX file has no torch model
    data = json.loads((out / "report.json").read_text())
    assert data["source"] == {"model": str(onnx), "backends": ["onnxruntime"]} and data["comparison"] is None
