"""Bad numbers never train: recipe floats are finite, seeds in range, model options checked by their family, and a
run whose weights or loss end non-finite fails (rc 2 from the CLI) without writing model.safetensors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from zoo.cli import main
from zoo.engine import NaNLossError, train
from zoo.errors import ZooError
from zoo.recipes import get_recipe

from .helpers import make_cached_split, write_mnist


@pytest.fixture
def gen(data_home):
    make_cached_split("gen", n=300, size=28, chans=1, split="train")
    make_cached_split("gen", n=100, size=28, chans=1, split="test", seed=1)
    return data_home


@pytest.mark.parametrize("field,value,msg", [
    ("lr", math.inf, "lr=inf (every float must be a finite number)"),
    ("lr", 1e308, "lr=1e+308"),
    ("lr", math.nan, "lr=nan"),
    ("warmup_epochs", math.inf, "warmup_epochs=inf"),
    ("weight_decay", math.inf, "weight_decay=inf"),
    ("gamma", math.inf, "gamma=inf"),
    ("grad_clip", math.inf, "grad_clip=inf"),
    ("ema", math.nan, "ema=nan"),
    ("epochs", 2.5, "epochs=2.5 (expected an integer)"),
    ("nesterov", 1, "nesterov=1 (expected true or false)"),
    ("batch_size", True, "batch_size=True"),
])
def test_recipe_refuses_non_finite_and_mistyped_values(field, value, msg):
    with pytest.raises(ZooError, match="invalid recipe value") as e:
        get_recipe("sgd", **{field: value})
    assert msg in str(e.value)


@pytest.mark.parametrize("args,msg", [
    (["--warmup-epochs", "inf"], "warmup_epochs=inf"),  # trained every step at LR 0 with rc 0
    (["--lr", "inf"], "lr=inf"),
    (["--lr", "1e308"], "lr=1e+308"),
    (["--seed", "-1"], "--seed -1: must be an integer in 0..4294967295"),
    (["--seed", str(2**70)], f"--seed {2**70}: must be an integer"),
    (["--model-opt", "dropout=2.0"], "dropout=2.0 (a probability in [0, 1))"),
    (["--model-opt", "channels=[0,0]"], "channels=(0, 0) (positive integers"),
])
def test_cli_bad_numbers_are_rc2_before_training(gen, tmp_path, capsys, args, msg):
    out = tmp_path / "never"
    rc = main(["train", "lenet5", "--dataset", "gen", "--epochs", "1", "--out", str(out), "--no-progress", *args])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and "Traceback" not in err, err
    assert not out.exists()


def test_seed_range_in_the_python_api(gen, tmp_path):
    for seed in (-1, 2**32, 2**70, True, 1.5):
        with pytest.raises(ZooError, match="seed .* must be an integer in 0..4294967295"):
            train("mlp2", "gen", "adam", epochs=1, seed=seed, out_dir=tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()
    r = train("mlp2", "gen", "adam", epochs=1, seed=2**32 - 1, out_dir=tmp_path / "ok", progress=False,
              evaluate_test=False)
    assert r.model.zoo_meta["recipe"]["seed"] == 2**32 - 1


def _poison_last_step(monkeypatch, value: float):
    """Every Adam step sets the weights to `value` after updating them: with one step per epoch, the loss that
    step measured is finite, and only the weights it leaves behind are broken (a divergence on the last step)."""
    step = torch.optim.Adam.step

    def poisoned(self, *a, **k):
        out = step(self, *a, **k)
        with torch.no_grad():
            for g in self.param_groups:
                for p in g["params"]:
                    p.fill_(value)
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", poisoned)


# 300 images, val_fraction 0.1: 270 train images, so batch 270 is one step per epoch.
ONE_STEP = ["--recipe", "adam", "--epochs", "1", "--batch-size", "270", "--no-progress"]


def test_nan_weights_after_the_last_step_fail_without_weights_file(gen, tmp_path, monkeypatch, capsys):
    _poison_last_step(monkeypatch, math.nan)
    out = tmp_path / "run"
    rc = main(["train", "mlp2", "--dataset", "gen", "--out", str(out), *ONE_STEP])
    err = capsys.readouterr().err
    assert rc == 2 and "weights hold NaN/inf after epoch 1" in err and "nothing saved" in err, err
    assert not (out / "model.safetensors").exists() and not (out / "checkpoint.pt").exists()


def test_overflowing_outputs_fail_on_the_validation_or_test_loss(gen, tmp_path, monkeypatch):
    """Finite weights whose logits overflow: the loss they give is inf/NaN, never a number printed with rc 0."""
    _poison_last_step(monkeypatch, 1e30)
    with pytest.raises(NaNLossError, match="validation loss became"):
        train("mlp2", "gen", "adam", epochs=1, batch_size=270, out_dir=tmp_path / "a", progress=False)
    assert not (tmp_path / "a" / "model.safetensors").exists()
    with pytest.raises(NaNLossError, match=r"test loss is (nan|inf).*no model.safetensors written"):
        train("mlp2", "gen", "adam", epochs=1, batch_size=300, val_fraction=0.0, out_dir=tmp_path / "b",
              progress=False)
    assert not (tmp_path / "b" / "model.safetensors").exists()


def test_ema_average_checked_too(gen, tmp_path, monkeypatch):
    _poison_last_step(monkeypatch, math.inf)
    with pytest.raises(NaNLossError, match=r"weights hold NaN/inf after epoch 1"):
        train("mlp2", "gen", "adam", epochs=1, batch_size=270, ema=0.5, out_dir=tmp_path / "e", progress=False)
    assert not (tmp_path / "e" / "model.safetensors").exists()


def test_weights_trained_on_a_partial_copy_say_so(gen, tmp_path):
    import zoo
    from zoo.data import ingest

    write_mnist(tmp_path / "m")  # 200 / 100 images of MNIST's 60000 / 10000
    ingest("mnist", tmp_path / "m", progress=False, allow_partial=True)
    r = train("mlp2", "mnist", "adam", epochs=1, out_dir=tmp_path / "run", progress=False)
    assert r.model.zoo_meta["partial_data"] == ["test", "train"]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["meta"]["partial_data"] == ["test", "train"]
    assert zoo.load(r.weights).zoo_meta["partial_data"] == ["test", "train"]
    whole = train("mlp2", "gen", "adam", epochs=1, out_dir=tmp_path / "g", progress=False, evaluate_test=False)
    assert "partial_data" not in whole.model.zoo_meta
