"""The one training loop: learning, exact resume after SIGKILL, NaN handling, fine-tuning, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import zoo
from zoo.engine import NaNLossError, train
from zoo.errors import ZooError
from zoo.weights import load_state_dict

from .conftest import REPO
from .helpers import make_cached_split


@pytest.fixture
def gen(data_home):
    make_cached_split("gen", n=1200, size=28, chans=1, split="train")
    make_cached_split("gen", n=200, size=28, chans=1, split="test", seed=1)
    return data_home


def test_train_learns_and_writes_artifacts(gen, tmp_path):
    r = train("lenet5", "gen", "fast_lenet", epochs=3, batch_size=32, out_dir=tmp_path / "run", progress=False)
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert 0 < r.history[0]["first_step_seconds"] <= r.history[0]["epoch_seconds"]  # compile/warm-up, shown apart
    assert "first_step_seconds" not in r.history[1]
    assert r.test.top1 > 0.5  # labels follow brightness: learnable
    for f in ("log.jsonl", "steps.jsonl", "checkpoint.pt", "model.safetensors", "curves.png", "result.json"):
        assert (tmp_path / "run" / f).exists(), f
    m = zoo.load(r.weights)
    assert m.zoo_meta["metrics"]["top1"] == pytest.approx(r.test.top1)
    assert m.zoo_meta["recipe"]["name"] == "fast_lenet" and len(m.zoo_meta["classes"]) == 10


def test_fp16_weights_metrics_are_those_of_the_shipped_file(gen, tmp_path):
    """With --fp16-weights the manifest's metrics are measured on the fp16-rounded weights users will load."""
    r = train("lenet5", "gen", "fast_lenet", epochs=1, batch_size=32, out_dir=tmp_path / "run", progress=False,
              fp16_weights=True)
    m = zoo.load(r.weights)
    assert m.zoo_meta["dtype"] == "float16"
    for k, v in r.model.state_dict().items():  # the returned model is the shipped one, rounded through fp16
        assert torch.equal(v, m.state_dict()[k]), k
    again = zoo.evaluate(m, "gen")
    assert m.zoo_meta["metrics"]["loss"] == pytest.approx(again.loss, abs=1e-6)
    assert m.zoo_meta["metrics"]["top1"] == again.top1


def test_commit_recorded_from_env_where_there_is_no_git(monkeypatch):
    from zoo.engine import git_commit

    assert len(git_commit()) == 40  # this checkout's HEAD
    monkeypatch.setenv("ZOO_COMMIT", "ab" * 20)
    assert git_commit() == "ab" * 20


def test_commit_is_read_when_the_run_starts(gen, tmp_path, monkeypatch):
    """A run records the commit it started from, not the HEAD of the moment it ends (hours later)."""
    from zoo import engine

    monkeypatch.setenv("ZOO_COMMIT", "aa" * 20)
    validate = engine.validate

    def later(*a, **k):  # an epoch's end: meanwhile the checkout has moved on
        monkeypatch.setenv("ZOO_COMMIT", "bb" * 20)
        return validate(*a, **k)

    monkeypatch.setattr(engine, "validate", later)
    r = train("mlp2", "gen", "adam", epochs=1, out_dir=tmp_path / "r", progress=False, evaluate_test=False)
    assert r.model.zoo_meta["commit"] == "aa" * 20


def _train_cmd(out, *extra):
    return [sys.executable, "-m", "zoo", "train", "lenet5_dropout", "--dataset", "gen", "--recipe", "adam",
            "--epochs", "3", "--batch-size", "8", "--out", str(out), "--no-progress", *extra]


def test_sigkill_resume_is_bit_identical(gen, tmp_path):
    env = dict(os.environ)
    subprocess.run(_train_cmd(tmp_path / "full"), env=env, check=True, capture_output=True, cwd=REPO, timeout=600)
    p = subprocess.Popen(_train_cmd(tmp_path / "killed"), env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    log = tmp_path / "killed" / "log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or not log.read_text().strip()):
        time.sleep(0.01)  # wait for epoch 1 to finish (its checkpoint is written)...
    time.sleep(0.3)  # ...then kill in the middle of epoch 2
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    done = [json.loads(x) for x in log.read_text().splitlines()]
    assert 1 <= len(done) < 3, "the kill must land before the end of training"
    subprocess.run(_train_cmd(tmp_path / "killed", "--resume"), env=env, check=True, capture_output=True, cwd=REPO,
                   timeout=600)
    a, b = load_state_dict(tmp_path / "full" / "model.safetensors"), load_state_dict(tmp_path / "killed" /
                                                                                     "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name, key in (("log.jsonl", "epoch"), ("steps.jsonl", "step")):  # each epoch and step logged once
        rows = [[json.loads(x)[key] for x in (tmp_path / run / name).read_text().splitlines()]
                for run in ("full", "killed")]
        assert rows[1] == rows[0] and len(set(rows[0])) == len(rows[0]), name
    assert not [p.name for p in (tmp_path / "killed").iterdir() if ".tmp" in p.name]  # no temp file of the kill


def test_resume_logs_each_epoch_and_step_once(gen, tmp_path):
    """A run killed in epoch 2 after some of its steps (and a torn line) reached the logs: --resume cuts the logs back
    to the checkpoint, so they read exactly like an uninterrupted run's."""
    kw = dict(batch_size=32, progress=False, evaluate_test=False)
    train("mlp2", "gen", "adam", epochs=2, out_dir=tmp_path / "full", **kw)
    out = tmp_path / "killed"
    train("mlp2", "gen", "adam", epochs=1, out_dir=out, **kw)
    with open(out / "steps.jsonl", "a") as f:  # what the killed epoch 2 had flushed
        f.write(json.dumps({"epoch": 1, "step": 30, "loss": 9.0, "lr": 0.1}) + "\n" + '{"epoch": 1, "st')
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "train_loss": 9.0}) + "\n")
    (out / ".checkpoint.pt.abc123.tmp").write_bytes(b"half")  # the killed run's temp checkpoint
    train("mlp2", "gen", "adam", epochs=2, out_dir=out, resume=True, **kw)
    for name, key in (("log.jsonl", "epoch"), ("steps.jsonl", "step")):
        rows = [[json.loads(x)[key] for x in (tmp_path / run / name).read_text().splitlines()]
                for run in ("full", "killed")]
        assert rows[1] == rows[0] and len(set(rows[0])) == len(rows[0]), name
    assert not (out / ".checkpoint.pt.abc123.tmp").exists()


def test_weight_ema_is_the_decayed_average_of_weights_and_bn_statistics():
    from zoo.engine import WeightEMA

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    start = {k: v.clone() for k, v in m.state_dict().items()}
    ema = WeightEMA(m, 0.75)
    m.train()(torch.randn(8, 3))  # moves the BN statistics and its step count
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    ema.update(m)
    now, avg = m.state_dict(), ema.module.state_dict()
    for k, v in avg.items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.75 * start[k] + 0.25 * now[k]), k
        else:
            assert torch.equal(v, now[k]) and int(v) == 1, k  # num_batches_tracked: copied, not averaged
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_ships_the_average_and_resumes_exactly(gen, tmp_path):
    """--ema: validation, the test metrics and model.safetensors are the average's; checkpoint.pt keeps the trained
    weights and the average, so a resumed run ends where an uninterrupted one does."""
    kw = dict(batch_size=32, progress=False, ema=0.9)
    full = train("lenet5_bn", "gen", "adam", epochs=2, out_dir=tmp_path / "full", **kw)
    train("lenet5_bn", "gen", "adam", epochs=1, out_dir=tmp_path / "part", evaluate_test=False, **kw)
    part = train("lenet5_bn", "gen", "adam", epochs=2, out_dir=tmp_path / "part", resume=True, **kw)
    a, b = load_state_dict(full.weights), load_state_dict(part.weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ck = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a[k], ck["ema"][k]) for k in a)  # what ships is the average...
    assert not all(torch.equal(a[k], ck["model"][k]) for k in a if a[k].is_floating_point())  # ...not the last step
    m = zoo.load(full.weights)
    assert m.zoo_meta["recipe"]["ema"] == 0.9
    assert m.zoo_meta["metrics"]["top1"] == zoo.evaluate(m, "gen").top1
    with pytest.raises(ZooError, match="ema=1.0"):
        train("lenet5_bn", "gen", "adam", ema=1.0, out_dir=tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()


class _Payload:
    """Pickles as a call of os.system: what a crafted checkpoint.pt would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["resume", "init"])
def test_pickle_payload_in_checkpoint_never_runs(gen, tmp_path, where):
    """--resume and --init torchvision: read checkpoints with weights_only=True: a pickle payload is refused with
    one ZooError naming the file, and its code never runs."""
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    out.mkdir()
    ck = out / "checkpoint.pt"
    torch.save({"model": {}, "epoch": 0, "evil": _Payload(marker)}, ck)
    with pytest.raises(ZooError, match=r"checkpoint\.pt: not a readable tensor file; refused"):
        if where == "resume":
            train("lenet5", "gen", "adam", epochs=1, out_dir=out, progress=False, resume=True)
        else:
            train("lenet5", "gen", "adam", epochs=1, out_dir=tmp_path / "other", progress=False,
                  init=f"torchvision:{ck}")
    assert not marker.exists()
    torch.save([1, 2], ck)  # loadable, but not a checkpoint: also one clear error
    with pytest.raises(ZooError, match="expected a dict of tensors, found list"):
        train("lenet5", "gen", "adam", epochs=1, out_dir=out, progress=False, resume=True)


def test_nan_loss_stops_and_keeps_checkpoint(gen, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train("mlp2", "gen", "adam", epochs=1, out_dir=out, progress=False, evaluate_test=False)
    good = torch.load(out / "checkpoint.pt", weights_only=True)
    import zoo.engine as engine

    monkeypatch.setattr(engine.F, "cross_entropy", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(NaNLossError, match="checkpoint.pt"):
        train("mlp2", "gen", "adam", epochs=2, out_dir=out, progress=False, resume=True)
    kept = torch.load(out / "checkpoint.pt", weights_only=True)
    assert kept["epoch"] == good["epoch"] == 0


def test_bad_inputs(gen, tmp_path, capsys):
    with pytest.raises(ZooError, match="fast_lenet"):
        train("lenet5", "gen", "fast_lenett", progress=False)
    with pytest.raises(ZooError, match="python -m zoo ingest"):
        train("lenet5", "nothere", progress=False)
    with pytest.raises(ZooError, match="did you mean gen"):
        train("lenet5", "gem", progress=False)
    for bad, field in [({"epochs": 0}, "epochs=0"), ({"lr": -1.0}, "lr=-1.0"), ({"optimizer": "adamax"}, "optimizer"),
                       ({"label_smoothing": 1.0}, "label_smoothing"), ({"augment": "crop_flop"}, "crop_flip")]:
        with pytest.raises(ZooError, match=field):
            train("lenet5", "gen", "adam", out_dir=tmp_path / "never", progress=False, **bad)
    for kw, msg in (({"train_last": -1}, "--train-last must be >= 1"), ({"train_subset": 0}, "--train-subset must"),
                    ({"init": "zoo:lenet6.gen"}, "--init zoo:lenet6.gen: unknown model 'lenet6'"),
                    ({"device": "gpu"}, "--device 'gpu'")) + ((({"device": "cuda"}, "CUDA is not available"),)
                                                              if not torch.cuda.is_available() else ()):
        with pytest.raises(ZooError, match=msg):
            train("lenet5", "gen", "adam", out_dir=tmp_path / "never", progress=False, **kw)
    assert not (tmp_path / "never").exists()  # rejected before a run folder is made
    train("mlp2", "gen", "adam", epochs=1, out_dir=tmp_path / "r", progress=False, evaluate_test=False, resume=True)
    assert "no checkpoint at" in capsys.readouterr().out  # --resume on a fresh folder starts fresh, and says so
    train("mlp2", "gen", "adam", epochs=2, lr=2e-3, out_dir=tmp_path / "r", progress=False, evaluate_test=False,
          resume=True)
    assert "other recipe values than the checkpoint's: lr 0.001 -> 0.002, epochs 1 -> 2" in capsys.readouterr().out
    with pytest.raises(ZooError, match="checkpoint is for mlp2"):
        train("mlp4", "gen", "adam", epochs=2, out_dir=tmp_path / "r", resume=True, progress=False)


def test_init_torchvision_and_zoo_with_head_replacement(data_home, tmp_path):
    import torchvision

    make_cached_split("five", n=100, size=32, chans=3, num_classes=5)
    tv = torchvision.models.resnet18()  # random ImageNet-shaped weights, 1000 classes
    path = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), path)
    r = train("resnet18_tv", "five", "adam", epochs=1, batch_size=50, init=f"torchvision:{path}", train_last=1,
              out_dir=tmp_path / "ft", progress=False, evaluate_test=False)
    m = r.model
    assert m.fc.out_features == 5
    assert torch.equal(m.layer1[0].conv1.weight.cpu(), tv.layer1[0].conv1.weight)  # frozen: untouched
    assert not torch.equal(m.fc.weight, torch.zeros_like(m.fc.weight))
    with pytest.raises(ZooError, match="not found"):
        train("resnet18_tv", "five", init="torchvision:/nope.pth", progress=False)
    r2 = train("lenet5_wide", "five", "adam", epochs=1, batch_size=10, init="zoo:lenet5_wide.cifar10",
               train_subset=4, out_dir=tmp_path / "zz", progress=False, evaluate_test=False)
    src = zoo.load("lenet5_wide.cifar10")
    assert r2.model.fc.out_features == 5 and len(r2.history) == 1
    assert sum(1 for line in (tmp_path / "zz" / "steps.jsonl").read_text().splitlines()) == 2  # 4/class * 5 / 10
    assert r2.model.features[0][0].weight.shape == src.features[0][0].weight.shape
    with pytest.raises(ZooError, match=r"--init zoo:lenet5_wide.mnist: tensor shapes differ.*features\.0\.0\.weight"):
        train("lenet5_wide", "five", "adam", epochs=1, init="zoo:lenet5_wide.mnist", out_dir=tmp_path / "x",
              progress=False)  # a 1-channel 28x28 checkpoint into a 3-channel 32x32 model
    assert not (tmp_path / "x").exists()


@pytest.mark.dist
def test_torchrun_ddp_two_cpu_processes(gen, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "zoo", "train", "lenet5", "--dataset", "gen", "--recipe", "adam", "--epochs", "2",
           "--batch-size", "32", "--out", str(out), "--no-progress"]
    p = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, cwd=REPO,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    hist = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert len(hist) == 2  # rank 0 alone logs
    assert (out / "model.safetensors").exists()
    # Early stopping: rank 0 validates and decides for every rank (others used to train on and die waiting for it).
    out = tmp_path / "ddp_stop"
    cmd[cmd.index("29533")] = "29534"
    cmd[cmd.index("--epochs") + 1] = "5"
    cmd[cmd.index(str(tmp_path / "ddp"))] = str(out)
    p = subprocess.run(cmd + ["--lr", "1e-12", "--patience", "1"], env=dict(os.environ, OMP_NUM_THREADS="1"),
                       capture_output=True, text=True, cwd=REPO, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len((out / "log.jsonl").read_text().splitlines()) == 2 and (out / "model.safetensors").exists()


def test_recipe_flips_are_off_for_digits(data_home, tmp_path, monkeypatch, capsys):
    """A CIFAR-tuned recipe (crop_flip_cutout) must not mirror MNIST digits; colour data keeps its flips."""
    import zoo.engine as engine

    seen = []

    class Spy(engine.Loader):
        def __init__(self, *a, augment=None, **kw):
            seen.append(engine.Augment.parse(augment))
            super().__init__(*a, augment=augment, **kw)

    monkeypatch.setattr(engine, "Loader", Spy)
    make_cached_split("mnist", n=300, size=28, chans=1, split="train")
    make_cached_split("mnist", n=100, size=28, chans=1, split="test", seed=1)
    r = train("mlp2", "mnist", "adam", augment="crop_flip_cutout", epochs=1, batch_size=50,
              out_dir=tmp_path / "m", progress=False)
    assert seen[0] == engine.Augment(crop_pad=4, flip=False, cutout=8)
    assert "horizontal flips are off for mnist" in capsys.readouterr().out
    assert r.model.zoo_meta["metrics"]["top1_flip_tta"] is None  # no flip TTA for digits either
    seen.clear()
    make_cached_split("cifar10", n=300, size=32, chans=3, split="train")
    make_cached_split("cifar10", n=100, size=32, chans=3, split="test", seed=1)
    r = train("mlp2", "cifar10", "adam", augment="crop_flip_cutout", epochs=1, batch_size=50,
              out_dir=tmp_path / "c", progress=False)
    assert seen[0] == engine.Augment(crop_pad=4, flip=True, cutout=8)
    assert 0 <= r.model.zoo_meta["metrics"]["top1_flip_tta"] <= 1


def test_cli_bf16_channels_last_on_cpu(gen, tmp_path):
    # On CPUs with AVX512-BF16/AMX these two make conv nets train ~2x faster; both are opt-in on the CPU.
    from .conftest import run_cli

    out = tmp_path / "bf16"
    run_cli("-m", "zoo", "train", "lenet5_bn", "--dataset", "gen", "--recipe", "adam", "--epochs", "2",
            "--batch-size", "64", "--bf16", "--channels-last", "--out", str(out), "--no-progress")
    meta = json.loads((out / "result.json").read_text())["meta"]
    assert meta["bf16"] is True and meta["channels_last"] is True and meta["device"].startswith("cpu")
    assert meta["metrics"]["top1"] > 0.5  # it learned (labels follow brightness)
    m = zoo.load(out / "model.safetensors")  # stored contiguous and fp32, like any other run
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in m.parameters())
    default = train("lenet5_bn", "gen", "adam", epochs=1, out_dir=tmp_path / "fp32", progress=False,
                    evaluate_test=False)
    assert default.model.zoo_meta["bf16"] is False and default.model.zoo_meta["channels_last"] is False


def test_cli_sets_every_recipe_field(gen, tmp_path):
    """Every Recipe field has a `zoo train` flag (derived from the dataclass); the flags reach the run's recipe,
    and --model-opt merges into the recipe's model options."""
    from dataclasses import fields

    from zoo.cli import parser
    from zoo.recipes import Recipe

    from .conftest import run_cli

    train_help = parser()._subparsers._group_actions[0].choices["train"].format_help()
    for f in fields(Recipe):
        if f.name != "model":
            assert "--" + f.name.replace("_", "-") in train_help, f.name
    out = tmp_path / "flags"
    run_cli("-m", "zoo", "train", "lenet5", "--dataset", "gen", "--recipe", "sgd", "--epochs", "1", "--batch-size",
            "64", "--nesterov", "--warmup-epochs", "0.5", "--grad-clip", "1.0", "--schedule", "step",
            "--step-epochs", "2", "--gamma", "0.5", "--val-fraction", "0.2", "--model-opt", "dropout=0.1",
            "--model-opt", "act=tanh", "--out", str(out), "--no-progress")
    rec = json.loads((out / "result.json").read_text())["meta"]["recipe"]
    assert rec["nesterov"] is True and rec["warmup_epochs"] == 0.5 and rec["grad_clip"] == 1.0
    assert rec["schedule"] == "step" and rec["step_epochs"] == 2 and rec["gamma"] == 0.5
    assert rec["val_fraction"] == 0.2 and rec["model"] == {"dropout": 0.1, "act": "tanh"}
    assert zoo.load(out / "model.safetensors").cfg.act == "tanh"
    bad = run_cli("-m", "zoo", "train", "lenet5", "--dataset", "gen", "--model-opt", "dropout=high",
                  "--out", str(tmp_path / "never"), check=False)
    assert bad.returncode == 2 and "dropout='high': expected float" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "never").exists()


def test_coarse_label_training_is_its_own_entry(data_home, tmp_path, monkeypatch):
    """CIFAR-100's 20 superclasses: trained, evaluated and published on the coarse labels, beside the fine entry."""
    from zoo.data import ingest
    from zoo.weights import publish, read_manifest

    from .helpers import write_cifar100

    write_cifar100(tmp_path / "c100", n=200)
    ingest("cifar100", tmp_path / "c100", progress=False, allow_partial=True)  # 200 of the published 50000
    r = train("mlp2", "cifar100", "adam", epochs=1, batch_size=50, labels="coarse", out_dir=tmp_path / "run",
              progress=False)
    assert r.test is not None and len(r.test.classes) == 20  # evaluated on the labels it learned
    meta = r.model.zoo_meta
    assert meta["tag"] == "mlp2.cifar100-coarse" and meta["labels"] == "coarse" and meta["num_classes"] == 20
    again = zoo.evaluate(r.weights, "cifar100")  # the label set follows the model
    assert again.top1 == pytest.approx(r.test.top1) and len(again.per_class_accuracy) == 20
    assert again.labels == "coarse"
    from zoo.report import eval_report

    files = eval_report([again], tmp_path / "rep", model=zoo.load(r.weights), tsne_samples=60)
    assert "super0" in files["md"].read_text()  # per-class rows are the superclasses
    manifest = tmp_path / "store" / "manifest.json"
    manifest.parent.mkdir()
    with pytest.raises(ZooError, match="trained on a partial copy of cifar100"):  # 200 images: not cifar100's figures
        publish(r.weights, manifest)
    assert not manifest.exists()
    assert publish(r.weights, manifest, force=True) == "mlp2.cifar100-coarse" and list(read_manifest(manifest)) == [
        "mlp2.cifar100-coarse"]
    assert read_manifest(manifest)["mlp2.cifar100-coarse"].partial_data == ["test", "train"]  # and it stays labelled
    monkeypatch.setenv("ZOO_MANIFEST", str(manifest))
    assert zoo.load("mlp2.cifar100-coarse").zoo_meta["labels"] == "coarse"


def test_validate_restores_the_modules_mode(gen):
    from zoo.data import Loader, open_split
    from zoo.engine import validate

    ld = Loader(open_split("gen", "test"), 64, shuffle=False)
    m = zoo.create_model("lenet5_dropout", dataset="mnist")
    for mode in (True, False):
        m.train(mode)
        loss, acc = validate(m, ld, False, torch.device("cpu"))
        assert m.training is mode and loss > 0 and 0 <= acc <= 1


def test_train_state_is_the_one_place_that_knows_checkpoint_keys(gen, tmp_path):
    """A checkpoint written by TrainState.save loads back through load_state_dict into a fresh state; a dict that
    lacks a key or is for another model is one ZooError."""
    from zoo.engine import TrainState, WeightEMA, load_tensors, make_optimizer
    from zoo.recipes import get_recipe

    rec = get_recipe("adam", epochs=1, batch_size=64, ema=0.9)

    def fresh():
        torch.manual_seed(1)
        m = zoo.create_model("lenet5_bn", dataset="mnist")
        opt = make_optimizer(rec, m)
        return TrainState(m, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), WeightEMA(m, 0.9),
                          model_name="lenet5_bn", num_classes=10, recipe=rec)

    r = train("lenet5_bn", "gen", "adam", epochs=1, batch_size=64, ema=0.9, out_dir=tmp_path / "r", progress=False,
              evaluate_test=False)
    ck = load_tensors(tmp_path / "r" / "checkpoint.pt", what="")
    assert TrainState.KEYS <= ck.keys()
    s = fresh()
    assert s.load_state_dict(ck) == {}  # the same recipe: nothing to report
    assert fresh().load_state_dict(ck | {"recipe": ck["recipe"] | {"epochs": 3}}) == {"epochs": (3, 1)}
    assert s.epoch == 1 and s.history == r.history
    assert all(torch.equal(a, b) for a, b in zip(s.state_dict()["model"].values(), ck["model"].values()))
    assert all(torch.equal(a, b) for a, b in zip(s.ema.module.state_dict().values(), ck["ema"].values()))
    with pytest.raises(ZooError, match=r"x\.pt: not a zoo checkpoint \(missing \['best'\]\)"):
        fresh().load_state_dict({k: v for k, v in ck.items() if k != "best"}, source="x.pt")
    with pytest.raises(ZooError, match="checkpoint is for mlp2 with 10 classes, not lenet5_bn"):
        fresh().load_state_dict(ck | {"model_name": "mlp2"})


@pytest.mark.parametrize("change, match", [
    ({"epoch": "3"}, r"checkpoint field\(s\) epoch, history hold values"),
    ({"epoch": -5}, r"field\(s\) epoch, history"),
    ({"bad_epochs": "x"}, r"field\(s\) bad_epochs hold"),
    ({"best": "high"}, r"field\(s\) best hold"),
    ({"history": "rows"}, r"field\(s\) history hold"),
    ({"recipe": [1]}, r"field\(s\) recipe hold"),
    ({"model": [1, 2]}, r"field\(s\) model hold"),
    ({"model": {"fc.weight": torch.zeros(3)}}, "its model state does not fit this run"),
    ({"optimizer": {"state": {}, "param_groups": [{"params": [99]}]}}, "its optimizer state does not fit this run"),
    ({"scheduler": {"nope": 1}}, "scheduler"),
])
def test_a_damaged_checkpoint_is_one_error_naming_the_field(gen, tmp_path, change, match):
    from zoo.engine import load_tensors

    out = tmp_path / "run"
    train("mlp2", "gen", "adam", epochs=1, batch_size=64, out_dir=out, progress=False, evaluate_test=False)
    ck = load_tensors(out / "checkpoint.pt", what="")
    torch.save(ck | change, out / "checkpoint.pt")
    with pytest.raises(ZooError, match=match):
        train("mlp2", "gen", "adam", epochs=2, batch_size=64, out_dir=out, progress=False, resume=True)


def test_resume_refuses_non_files_and_bad_arguments(gen, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").symlink_to("/etc/passwd")
    with pytest.raises(ZooError, match="checkpoint.pt: not a readable tensor file; refused"):
        train("mlp2", "gen", "adam", epochs=1, out_dir=out, progress=False, resume=True)
    (out / "checkpoint.pt").unlink()
    os.mkfifo(out / "checkpoint.pt")  # a FIFO would block torch.load forever
    with pytest.raises(ZooError, match="checkpoint.pt: not a regular file; refused"):
        train("mlp2", "gen", "adam", epochs=1, out_dir=out, progress=False, resume=True)
    for kw, match in ((dict(init="xavier:x"), "expected torchvision:PATH, zoo:TAG or xavier"),
                      (dict(out_dir=5), "out_dir must be a path, got int"), (dict(init=5), "init must be a string"),
                      (dict(train_subset=2.5), "--train-subset must be an integer")):
        with pytest.raises(ZooError, match=match):
            train("mlp2", "gen", "adam", epochs=1, progress=False, **({"out_dir": tmp_path / "x"} | kw))
    with pytest.raises(ZooError, match="takes a registered model name or an nn.Module, got int"):
        train(5, "gen")
