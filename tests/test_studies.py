"""Study files (zoo/studies.py): validation, grids, statistics, resume, --only/--report merging, the shipped studies."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo import studies as S
from zoo.errors import ZooError

from .conftest import run_cli
from .helpers import make_cached_split

TINY = {"batch_size": 32}  # every generated train split has >= 144 training images: a few steps per epoch


@pytest.fixture(scope="module")
def gen_data(tmp_path_factory):
    """Small generated splits under the canonical names the shipped studies ask for (and the 5-class stand-in);
    stl10, stl10_5 and cinic10 are left out, so their stand-ins are used as they would be here."""
    root = tmp_path_factory.mktemp("study_data")
    old = os.environ.get("ZOO_DATA")
    os.environ["ZOO_DATA"] = str(root)
    for name, size, chans, classes in (("cifar10", 32, 3, 10), ("cifar10_5", 32, 3, 5), ("cifar100", 32, 3, 100),
                                       ("mnist", 28, 1, 10)):
        make_cached_split(name, n=160, size=size, chans=chans, split="train", num_classes=classes)
        make_cached_split(name, n=40, size=size, chans=chans, split="test", num_classes=classes, seed=5)
    yield root
    if old is None:
        os.environ.pop("ZOO_DATA", None)
    else:
        os.environ["ZOO_DATA"] = old


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


TWO = """
[study]
title = "two"
dataset = "cifar10"
seeds = 2

[defaults]
recipe = "adam"
epochs = 1
batch_size = 32

[[variant]]
name = "base"
model = "mlp2"

[[variant]]
name = "wd"
model = "mlp2"
weight_decay = 1e-3
"""


# --------------------------------------------------------------------------------------------------- validation


def error(tmp_path, text) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ZooError) as e:
        S.load_study(path)
    msg = str(e.value)
    assert msg.startswith(str(path))  # every error names the file first
    return msg


def test_unknown_variant_key_names_file_line_and_key(tmp_path):
    msg = error(tmp_path, TWO.replace("weight_decay = 1e-3", "weight_decay = 1e-3\nlrr = 0.1"))
    assert msg == (f"{tmp_path / 's.toml'}, line 20: [[variant]] #2 ('wd'): unknown key 'lrr'; did you mean lr? "
                   f"valid keys: {', '.join(sorted(S.VARIANT_KEYS))}")


def test_unknown_keys_elsewhere(tmp_path):
    assert "line 5: [study]: unknown key 'seed'; did you mean seeds" in error(tmp_path, TWO.replace("seeds = 2",
                                                                                                  "seed = 2"))
    assert "line 9: [defaults]: unknown key 'epoch'" in error(tmp_path, TWO.replace("epochs = 1", "epoch = 1"))
    assert ": top level: unknown key 'variants'" in error(tmp_path, "[[variants]]\nname = 'x'\n")
    msg = error(tmp_path, TWO + '\n[datasets.cifar10]\nstandin = ["x"]\n')
    assert "line 22: [datasets.cifar10]: unknown key 'standin'; did you mean stand_in" in msg


def test_toml_syntax_error_gives_tomllib_line(tmp_path):
    msg = error(tmp_path, TWO.replace('model = "mlp2"\n\n[[variant]]', 'model = mlp2\n\n[[variant]]'))
    assert "not valid TOML" in msg and "line 14" in msg


@pytest.mark.parametrize("change, expected", [
    (('model = "mlp2"\n\n[[variant]]\nname = "wd"', 'model = "mlp3"\n\n[[variant]]\nname = "wd"'),
     "line 14: [[variant]] #1 ('base'): unknown model 'mlp3'"),
    (("weight_decay = 1e-3", "lr = -1.0"), "line 19: [[variant]] #2 ('wd'): invalid recipe value(s): lr=-1.0"),
    (("weight_decay = 1e-3", 'recipe = "adamm"'), "line 19: [[variant]] #2 ('wd'): unknown recipe 'adamm'"),
    (("weight_decay = 1e-3", 'optimizer = "lbfgs"'), "[[variant]] #2 ('wd'): invalid recipe value(s): "
                                                      "optimizer='lbfgs'"),
    (("weight_decay = 1e-3", "options = { dropuot = 0.2 }"), "line 19: [[variant]] #2 ('wd'): options: unknown "
                                                              "option(s) dropuot for MLP"),
    (("weight_decay = 1e-3", 'init = "zoo:mlp2.cifar11"'), "line 19: [[variant]] #2 ('wd'): init "
                                                            "'zoo:mlp2.cifar11': no weights 'mlp2.cifar11'"),
    (("weight_decay = 1e-3", "train_subset = 0"), "[[variant]] #2 ('wd'): train_subset 0: must be an integer >= 1"),
    (("weight_decay = 1e-3", 'labels = "medium"'), "[[variant]] #2 ('wd'): labels 'medium'"),
    (("weight_decay = 1e-3", "reference = { top1 = 0.5 }"), "line 19: [[variant]] #2 ('wd'): reference: needs a "
                                                             "citation string"),
    (("weight_decay = 1e-3", 'reference = { top1 = 50.7, citation = "x" }'), "reference top1 50.7: a fraction"),
    (("seeds = 2", "seeds = 0"), "line 5: [study] seeds must be an integer in 1..100, got 0"),
    (('name = "wd"', 'name = "base"'), "two variants are named 'base'"),
    (("[study]", '[study]\nbase = "bse"'), "line 3: [study] base 'bse' is not a variant; did you mean base?"),
])
def test_bad_values_are_one_error_naming_the_key(tmp_path, change, expected):
    assert expected in error(tmp_path, TWO.replace(*change))


def test_cli_error_is_rc2_and_nothing_trains(tmp_path, data_home):
    path = write(tmp_path, TWO.replace("weight_decay = 1e-3", "weight_decay = -1.0"))
    p = run_cli("-m", "zoo", "study", str(path), "--out", str(tmp_path / "out"), check=False)
    assert p.returncode == 2 and p.stderr.startswith(f"error: {path}, line 19:")
    assert not (tmp_path / "out").exists()  # validated whole before anything trained


def test_check_lists_the_runs_and_trains_nothing(tmp_path, gen_data):
    path = write(tmp_path, TWO)
    p = run_cli("-m", "zoo", "study", str(path), "--check", "--seeds", "1", "--out", str(tmp_path / "out"),
                env={"ZOO_DATA": str(gen_data)})
    assert p.stdout == ("base | seed 0 | mlp2 on cifar10 | 1 ep | to run\n"
                        "wd | seed 0 | mlp2 on cifar10 | 1 ep | to run\n")
    assert not (tmp_path / "out").exists()


def test_overrides_checked(tmp_path):
    path = write(tmp_path, TWO)
    with pytest.raises(ZooError, match=r"^--seeds 0: must be an integer in 1\.\.100$"):
        S.load_study(path, seeds=0)
    with pytest.raises(ZooError, match=r"^--set lrr=\.\.\.: unknown key; did you mean lr\?"):
        S.load_study(path, set_values={"lrr": 1})
    with pytest.raises(ZooError, match=r"^--set lr=-1 \(.*s\.toml, variant 'base'\): invalid recipe value\(s\): lr=-1"):
        S.load_study(path, set_values={"lr": -1})
    assert S.parse_set(["batch_size=64", "augment=none", "nesterov=true"]) == {"batch_size": 64, "augment": "none",
                                                                               "nesterov": True}


def test_grid_expands_in_file_order(tmp_path):
    path = write(tmp_path, TWO + '\n[[variant]]\nname = "g"\nmodel = "mlp2"\n'
                 '[variant.grid]\nlr = [1e-3, 1e-2]\noptimizer = ["adam", "sgd"]\n')
    st = S.load_study(path, epochs=3)
    names = [v.name for v in st.variants]
    assert names == ["base", "wd", "g (lr=0.001, optimizer=adam)", "g (lr=0.001, optimizer=sgd)",
                     "g (lr=0.01, optimizer=adam)", "g (lr=0.01, optimizer=sgd)"]
    g = st.variants[5]
    assert (g.overrides["lr"], g.overrides["optimizer"], g.epochs, g.group, g.slug) == (0.01, "sgd", 3, "g",
                                                                                        "g_lr_0_01_optimizer_sgd")
    assert [v.name for v in S.select(st, ["g"])] == names[2:]  # --only a grid's name runs all its points
    bad = TWO + '\n[[variant]]\nname = "g"\nmodel = "mlp2"\nlr = 0.1\ngrid = { lr = [1e-3] }\n'
    assert "[[variant]] #3 ('g'): lr is both a key and a grid axis" in error(tmp_path, bad)
    bad = TWO + '\n[[variant]]\nname = "g"\nmodel = "mlp2"\ngrid = { lr = [1e-3, 20.0] }\n'
    assert "g (lr=20): invalid recipe value(s): lr=20.0" in error(tmp_path, bad)


# --------------------------------------------------------------------------------------------------- statistics


def test_summary_and_interval_by_hand(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # the scipy-free path: the t table
    s = S.summarize([0.5, 0.6, 0.7])
    assert s["n"] == 3 and math.isclose(s["mean"], 0.6) and math.isclose(s["std"], 0.1)
    half = 4.303 * 0.1 / math.sqrt(3)  # t(0.975, 2) = 4.303
    assert np.allclose(s["ci95"], [0.6 - half, 0.6 + half])
    assert S.summarize([0.42]) == {"n": 1, "mean": 0.42, "std": None, "ci95": None}
    assert S.t_critical(1) == 12.706 and S.t_critical(30) == 2.042 and abs(S.t_critical(200) - 1.9719) < 1e-3


def test_t_test_by_hand(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    r = S.paired_t([0.50, 0.52, 0.54], [0.55, 0.56, 0.60])  # d = .05 .04 .06: mean .05, sd .01
    t = 0.05 / (0.01 / math.sqrt(3))
    assert math.isclose(r["t"], t) and r["df"] == 2 and math.isclose(r["diff"], 0.05)
    assert math.isclose(r["p"], 1 - t / math.sqrt(2 + t * t))  # df 2: P(|T| <= t) = t / sqrt(2 + t^2)
    assert math.isclose(S.t_two_sided_p(1.0, 1), 0.5)  # df 1 is Cauchy: P(|T| >= 1) = 1/2
    assert math.isclose(S.t_two_sided_p(0.0, 7), 1.0)
    assert S.paired_t([0.5, 0.6], [0.5, 0.6])["p"] == 1.0  # no difference at all
    assert S.paired_t([0.5, 0.6], [0.6, 0.7])["p"] == 0.0  # the same difference every seed: t = inf


def test_t_distribution_matches_scipy():
    st = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 5, 9, 10, 29):
        for t in (0.3, 1.0, 2.5, 7.0):
            assert math.isclose(S.t_two_sided_p(t, df), 2 * st.t.sf(t, df), rel_tol=1e-9, abs_tol=1e-12)
        assert abs(S.T975[df - 1] - st.t.ppf(0.975, df)) < 5e-4


def test_mcnemar_exact():
    base = np.array([True] * 50 + [True] * 1 + [False] * 9 + [False] * 40)
    other = np.array([True] * 50 + [False] * 1 + [True] * 9 + [False] * 40)
    r = S.mcnemar(base, other)
    assert (r["only_base"], r["only_other"]) == (1, 9)
    assert r["p"] == 2 * (1 + 10) / 2**10  # 2 * P(X <= 1), X ~ Bin(10, 1/2)
    assert S.mcnemar(base, base)["p"] == 1.0
    big = S.mcnemar(np.r_[np.ones(700, bool), np.zeros(600, bool)], np.r_[np.zeros(700, bool), np.ones(600, bool)])
    assert 0.005 < big["p"] < 0.01  # b + c = 1300: the log-space branch; z ~ 2.75


# --------------------------------------------------------------------------------------------------- running


def test_run_resume_skip_lock_and_stale(tmp_path, gen_data, monkeypatch, capsys):
    import zoo.engine

    study = S.load_study(write(tmp_path, TWO))
    out = tmp_path / "out"
    calls = []
    real_train = zoo.engine.train

    def spy(*args, **kw):
        calls.append((kw["seed"], kw["resume"], kw["out_dir"].name))
        return real_train(*args, **kw)

    monkeypatch.setattr(S, "train", spy)
    res = S.run_study(study, out, progress=False)
    assert calls == [(0, False, "seed0"), (1, False, "seed1"), (0, False, "seed0"), (1, False, "seed1")]
    assert res["trained"] == [("base", 0), ("base", 1), ("wd", 0), ("wd", 1)] and res["report"]["html"].exists()
    rec = json.loads((out / "runs/wd/seed1" / S.RUN_RECORD).read_text())
    assert (rec["variant"], rec["seed"], rec["dataset"], rec["epochs"]) == ("wd", 1, "cifar10", 1)
    assert np.load(out / "runs/wd/seed1" / S.PREDICTIONS).shape == (40,)
    # An interrupted run (no record yet; its checkpoint there) resumes; the finished ones are skipped.
    (out / "runs/wd/seed1" / S.RUN_RECORD).unlink()
    calls.clear()
    capsys.readouterr()
    res = S.run_study(study, out, progress=False)
    assert calls == [(1, True, "seed1")]
    assert res["skipped"] == [("base", 0), ("base", 1), ("wd", 0)]
    assert "skip base seed 0: finished" in capsys.readouterr().out
    # A run another process holds is left to it.
    (out / "runs/wd/seed1" / S.RUN_RECORD).unlink()
    lock = S._RunLock(out / "runs/wd/seed1.lock")
    assert lock.acquire()
    try:
        calls.clear()
        res = S.run_study(study, out, progress=False)
        assert calls == [] and res["busy"] == [("wd", 1)] and res["report"] is None
    finally:
        lock.release()
    # A finished run made with other settings is refused, not reported as this variant's.
    with pytest.raises(ZooError, match=r"runs/base/seed0 holds a finished run of 'base' seed 0 made with other "):
        S.run_study(S.load_study(write(tmp_path, TWO), epochs=2), out, progress=False)


def test_report_table_and_significance(tmp_path, gen_data):
    study = S.load_study(write(tmp_path, TWO))
    out = tmp_path / "out"
    S.run_study(study, out, progress=False)
    data = json.loads((out / "report.json").read_text())
    assert [r["variant"] for r in data["rows"]] == ["base", "wd"]
    base, wd = data["stats"]["base"], data["stats"]["wd"]
    assert data["rows"][0]["vs base"] == "base" and base["vs_base"] is None
    assert wd["vs_base"]["test"] == "paired t" and wd["vs_base"]["seeds"] == [0, 1]
    s = S.summarize(wd["top1_per_seed"])
    assert data["rows"][1]["95% CI %"] == f"[{s['ci95'][0] * 100:.2f}, {s['ci95'][1] * 100:.2f}]"
    md = (out / "report.md").read_text()
    assert "## Accuracy" in md and "## Misclassified test images" in md and "paired t-test" in md
    html = (out / "report.html").read_text()
    assert html.count("<img") == 5  # seed-band curves, 2 confusion matrices, 2 galleries
    # One seed: McNemar on the saved test predictions.
    one = tmp_path / "one"
    S.run_study(S.load_study(write(tmp_path, TWO), seeds=1), one, progress=False)
    cmp = json.loads((one / "report.json").read_text())["stats"]["wd"]["vs_base"]
    assert cmp["test"] == "McNemar exact" and cmp["seeds"] == [0]


def test_only_on_two_machines_then_merged_report(tmp_path, gen_data, capsys):
    path = write(tmp_path, TWO.replace("seeds = 2", "seeds = 1"))
    study = S.load_study(path)
    a, b = tmp_path / "machine_a", tmp_path / "machine_b"
    res = S.run_study(study, a, only=["base"], progress=False)
    assert res["report"] is None and not (a / "report.html").exists()
    assert "1 of 2 runs finished; the report is written when all are" in capsys.readouterr().out
    S.run_study(study, b, only=["wd"], progress=False)
    S.write_study_report(study, a)
    partial = json.loads((a / "report.json").read_text())
    assert [r["variant"] for r in partial["rows"]] == ["base"] and partial["missing"] == [["wd", 0]]
    assert "## Not finished\n\n- wd seed 0\n" in (a / "report.md").read_text()
    env = {"ZOO_DATA": str(gen_data)}
    p = run_cli("-m", "zoo", "study", str(path), "--report", "--out", str(a), "--merge", str(b), env=env)
    assert p.stdout == f"report: {a / 'report.html'}\n"
    merged = json.loads((a / "report.json").read_text())
    assert [r["variant"] for r in merged["rows"]] == ["base", "wd"] and merged["missing"] == []
    assert merged["stats"]["wd"]["vs_base"]["test"] == "McNemar exact"
    p = run_cli("-m", "zoo", "study", str(path), "--only", "nope", "--out", str(a), env=env, check=False)
    assert p.returncode == 2 and "--only 'nope': no such variant" in p.stderr


def test_jobs_run_in_separate_processes(tmp_path, gen_data):
    path = write(tmp_path, TWO.replace("seeds = 2", "seeds = 1"))
    out = tmp_path / "out"
    p = run_cli("-m", "zoo", "study", str(path), "--jobs", "2", "--out", str(out), "--no-progress",
                env={"ZOO_DATA": str(gen_data)})
    assert f"start base seed 0 ({max(1, len(os.sched_getaffinity(0)) // 2)} threads;" in p.stdout
    assert "base seed 0: trained" in (out / "runs/base/seed0.worker.log").read_text()
    assert "report:" in p.stdout and (out / "report.html").exists()


def test_stand_in_dataset_is_used_and_said(tmp_path, gen_data):
    text = TWO.replace('dataset = "cifar10"', 'dataset = "cinic10"').replace("seeds = 2", "seeds = 1") + \
        '\n[datasets.cinic10]\nstand_in = ["cifar10"]\nnote = "CIFAR-10 stands in."\n'
    study = S.load_study(write(tmp_path, text))
    assert {(r.dataset, r.stand_in) for r in S.plan(study)} == {("cifar10", "CIFAR-10 stands in.")}
    S.run_study(study, tmp_path / "out", progress=False)
    md = (tmp_path / "out/report.md").read_text()
    assert "Data: cinic10 is not ingested here; **cifar10** stands in for it: CIFAR-10 stands in." in md
    assert "| cifar10 (for cinic10) |" in md
    missing = S.load_study(write(tmp_path, TWO.replace('dataset = "cifar10"', 'dataset = "cinic10"'), "m.toml"))
    with pytest.raises(ZooError, match=r"m\.toml: dataset 'cinic10' is not ingested; run: python -m zoo ingest "
                                       r"cinic10 --root DIR \(or --download\)"):
        S.plan(missing)


# --------------------------------------------------------------------------------------------------- shipped studies


def test_shipped_studies_validate():
    names = set(S.shipped_studies())
    assert {"lenet5_resnet9_colour", "lenet5_stl10", "cifar100_convnets", "cinic10_lenet", "mnist_mlp_resnet18",
            "experiment_lenet5", "experiment_resnet", "experiment_mlp"} <= names
    for n in names:
        S.load_study(n)
    refs = {v.name: v.reference["top1"] for n in names for v in S.load_study(n).variants if v.reference}
    assert refs == {"LeNet-5 max-pool": 0.46, "TwoLayerNet": 0.11, "LeNet-style ConvNet": 0.22, "4-layer MLP": 0.22,
                    "widened BN ConvNet": 0.56, "5-class fine-tune from the CIFAR-100 ConvNet": 0.826,
                    "LeNet-5": 0.507, "widened BN LeNet": 0.644, "MLP": 0.982, "ResNet-18 from scratch": 0.773,
                    "ResNet-18 fine-tuned": 0.883}


def _run_shipped(name, tmp_path):
    study = S.load_study(name, seeds=1, epochs=1, set_values=TINY)
    res = S.run_study(study, tmp_path / name, progress=False)
    data = json.loads((tmp_path / name / "report.json").read_text())
    assert [r["variant"] for r in data["rows"]] == [v.name for v in study.variants]
    assert res["report"]["html"].exists() and data["missing"] == []
    return data


@pytest.mark.parametrize("name", ["lenet5_stl10", pytest.param("cinic10_lenet", marks=pytest.mark.slow)])
def test_shipped_lenet_studies_run(name, tmp_path, gen_data):
    data = _run_shipped(name, tmp_path)
    assert data["datasets"] == ({"stl10": "cifar10"} if name == "lenet5_stl10" else {"cinic10": "cifar10"})
    assert any(r["reference vs measured"].startswith(("46.0% (stl10 at 32x32) vs", "50.7% (cinic10) vs"))
               for r in data["rows"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet5_resnet9_colour", "cifar100_convnets", "mnist_mlp_resnet18"])
def test_shipped_resnet_studies_run(name, tmp_path, gen_data):
    data = _run_shipped(name, tmp_path)
    html = (tmp_path / name / "report.html").read_text()
    if name == "cifar100_convnets":
        assert data["datasets"] == {"cifar100": "cifar100", "stl10_5": "cifar10_5"}
        assert "t-SNE of penultimate features" in html
    if name == "mnist_mlp_resnet18":
        assert "ResNet-18 from scratch: activation maps" in html


def test_experiment_family_is_the_shipped_study(tmp_path, gen_data):
    out = tmp_path / "exp"
    p = run_cli("-m", "zoo", "experiment", "mlp", "--dataset", "mnist", "--epochs", "1", "--set", "batch_size=32",
                "--out", str(out), "--no-progress", env={"ZOO_DATA": str(gen_data)})
    assert p.stdout.strip().endswith(f"report: {out / 'report.html'}")
    data = json.loads((out / "report.json").read_text())
    assert [r["variant"] for r in data["rows"]] == ["mlp4", "mlp4 + dropout 0.2"] and data["seeds"] == [0]
    p = run_cli("-m", "zoo", "experiment", "mlp", "--out", str(out), check=False)
    assert p.returncode == 2 and "--dataset is required with a family" in p.stderr
