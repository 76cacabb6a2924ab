"""The evaluation harness: metrics against scikit-learn, backend agreement, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from zoo import metrics
from zoo.errors import ZooError

from .helpers import make_cached_split


def test_metrics_match_sklearn():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 500)
    p = np.where(rng.random(500) < 0.6, y, rng.integers(0, 6, 500))
    p[p == 5] = 4  # a class never predicted: precision 0 by convention
    cm = metrics.confusion_matrix(y, p, 6)
    assert np.array_equal(cm, confusion_matrix(y, p, labels=range(6)))
    m = metrics.from_confusion(cm)
    for avg in ("macro", "weighted"):
        pr, rc, f1, _ = precision_recall_fscore_support(y, p, average=avg, zero_division=0)
        assert m[avg] == pytest.approx({"precision": pr, "recall": rc, "f1": f1})
    pr, rc, f1, sup = precision_recall_fscore_support(y, p, zero_division=0)
    assert np.allclose(m["precision"], pr) and np.allclose(m["recall"], rc) and np.allclose(m["f1"], f1)
    assert m["support"] == sup.tolist() and m["accuracy"] == pytest.approx((y == p).mean())
    logits = rng.normal(size=(500, 6))
    top3 = np.argsort(-logits, 1)[:, :3]
    assert metrics.topk_accuracy(logits, y, 3) == pytest.approx((top3 == y[:, None]).any(1).mean())


@pytest.fixture
def gen_test(data_home):
    make_cached_split("evalgen", n=400, size=32, chans=3, split="train")
    return make_cached_split("evalgen", n=300, size=32, chans=3, split="test", seed=1)


def test_evaluate_result_and_backend_agreement(gen_test, tmp_path, monkeypatch):
    import tempfile

    from export import to_onnx, to_torchscript
    from zoo.evaluation import compare

    torch.manual_seed(0)
    model = zoo.create_model("lenet5", dataset="cifar10")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    results = [zoo.evaluate(model, "evalgen", backend=b, batch_size=128)
               for b in ("torch", "torchscript", "onnxruntime")]
    assert list(scratch.glob("zoo-eval-*")) == []  # the exported copies are gone once loaded
    r = results[0]
    assert repr(r) == (f"EvalResult(model={r.model!r}, dataset='evalgen', split='test', backend='torch', "
                       f"n={r.num_samples}, top1={r.top1:.4f}, loss={r.loss:.4f})")  # one short line, not 20 KB
    assert r.num_samples == 300 and len(r.per_class_accuracy) == 10 and r.top5 is not None
    assert np.array(r.confusion).sum() == 300
    assert r.top1 == pytest.approx(np.trace(np.array(r.confusion)) / 300)
    assert r.throughput["images_per_s"] > 0 and r.throughput["latency_p95_ms"] >= r.throughput["latency_p50_ms"]
    wrong = [m for m in r.misclassified]
    assert len(wrong) == min(200, 300 - round(r.top1 * 300)) and all(m["true"] != m["pred"] for m in wrong)
    cmp = compare(results)
    for row in cmp["rows"]:
        assert row["agreement_with_torch"] == 1.0 and row["max_abs_logit_diff"] <= 1e-4
    for f in (to_onnx(model.eval(), torch.zeros(1, 3, 32, 32), tmp_path / "m.onnx", verify=False),
              to_torchscript(model, torch.zeros(1, 3, 32, 32), tmp_path / "m.pt", verify=False)):
        exported = zoo.evaluate(f, "evalgen", batch_size=128)  # an exported file runs on its own runtime
        assert exported.backend == ("onnxruntime" if f.suffix == ".onnx" else "torchscript")
        np.testing.assert_allclose(exported.logits, r.logits, atol=1e-4)
    tta = zoo.evaluate(model, "evalgen", tta=True)  # single-view metrics + the flip-TTA top-1, one pass
    assert tta.tta and not r.tta and r.top1_flip_tta is None
    assert tta.top1 == r.top1 and tta.confusion == r.confusion and tta.loss == r.loss  # top1 is never the TTA one
    np.testing.assert_allclose(tta.logits, r.logits)

    class Mirrored(torch.nn.Module):  # the model on each image's mirror: the second view TTA averages in
        def forward(self, x):
            return model(x.flip(3))

    mirrored = zoo.evaluate(Mirrored(), "evalgen")
    want = float((((r.logits + mirrored.logits) / 2).argmax(1) == gen_test.labels).mean())
    assert tta.top1_flip_tta == pytest.approx(want, abs=1e-12)
    assert f"flip-TTA top-1 {want * 100:.2f}%" in tta.summary() and "TTA" not in r.summary()


def test_evaluate_errors(gen_test, tmp_path):
    from export import to_onnx

    with pytest.raises(ZooError, match="mlp2 has 7 classes but evalgen has 10"):
        zoo.evaluate(zoo.create_model("mlp2", dataset="cifar10", num_classes=7), "evalgen")
    with pytest.raises(ZooError, match="python -m zoo ingest"):
        zoo.evaluate(zoo.create_model("mlp2"), "notingested")
    model = zoo.create_model("lenet5")  # MNIST-sized
    path = to_onnx(model.eval(), torch.zeros(1, 1, 28, 28), tmp_path / "m.onnx", verify=False)
    with pytest.raises(ZooError, match=r"expects input \[1, 28, 28\]"):
        zoo.evaluate(path, "evalgen", backend="onnxruntime")
    with pytest.raises(ZooError, match="runs on backend 'onnxruntime' only, not 'torch'"):
        zoo.evaluate(path, "evalgen", backend="torch")  # would label ORT's numbers as torch's
    with pytest.raises(ZooError, match="backend"):
        zoo.evaluate(model, "evalgen", backend="tensorrt")


@pytest.mark.realdata
def test_shipped_weights_reproduce_manifest_accuracy(real_cifar10):
    """The measured accuracy in the manifest is what the harness gives on this machine's CPU."""
    model = zoo.load("lenet5.cifar10")
    r = zoo.evaluate(model, "cifar10", backend="onnxruntime")
    assert r.top1 == pytest.approx(model.zoo_meta["metrics"]["top1"], abs=0.003)


def test_tsne_sample_spans_class_sorted_split():
    """Ingested splits are sorted by class: the report's t-SNE sample must still cover every class."""
    import warnings

    from zoo.data import sample_indices
    from zoo.report import plot_tsne

    labels = np.repeat(np.arange(10), 1000)  # class-sorted, as an ImageFolder ingest writes it
    idx = sample_indices(len(labels), 1000)
    assert len(idx) == 1000 and len(set(idx)) == 1000 and set(labels[idx]) == set(range(10))
    feats = np.random.default_rng(0).normal(size=(200, 8)) + labels[idx][:200, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the legend must name exactly the classes plotted
        assert plot_tsne(feats, labels[idx][:200], [f"c{i}" for i in range(10)])[:4] == b"\x89PNG"


def _fail_writing_html(monkeypatch):
    """From now on, writing any report.html fails as a full disk would."""
    real = Path.write_bytes

    def fail_on_html(self, data):
        if self.name == "report.html":
            raise OSError("disk full")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", fail_on_html)


def test_report_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from zoo import report

    sections = [("Summary", "text", "<p>text</p>")]
    files = report.write_report(tmp_path / "r", "t", sections, {"a": 1}, {"figures/x.png": b"png"})
    assert (tmp_path / "r" / "figures" / "x.png").read_bytes() == b"png"
    assert json.loads(files["json"].read_text()) == {"a": 1} and "<p>text</p>" in files["html"].read_text()
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [".report-files.json", "figures", "report.html",
                                                                   "report.json", "report.md"]  # no staging folder
    _fail_writing_html(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        report.write_report(tmp_path / "s", "t", sections, {"a": 1}, {"figures/x.png": b"png"})
    assert list((tmp_path / "s").iterdir()) == []  # neither figures nor a partial report


def test_report_replaces_an_earlier_report_whole(tmp_path, monkeypatch):
    """No figure of an earlier report survives beside a new one (e.g. a compare report's t-SNE under an ONNX file's
    report); files that are not the report's (a run, exported models) stay; a failed rewrite keeps the old report."""
    from zoo import report

    out = tmp_path / "r"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "05_t_SNE.png").write_bytes(b"stale")  # from a report written before the file list existed
    (out / "report.json").write_text("{}")
    (out / "model.onnx").write_bytes(b"not the report's")
    (out / "run").mkdir()
    (out / "run" / "model.safetensors").write_bytes(b"weights")
    sections = [("Summary", "text", "<p>text</p>")]
    report.write_report(out, "t", sections, {"a": 1}, {"figures/00_confusion.png": b"png", "curves.png": b"c"})
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["00_confusion.png"]
    assert (out / "curves.png").read_bytes() == b"c"
    report.write_report(out, "t", sections, {"a": 2}, {"figures/01_per_class.png": b"png2"})
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["01_per_class.png"]
    assert not (out / "curves.png").exists()  # written by the earlier report only (its file list says so)
    assert (out / "model.onnx").read_bytes() == b"not the report's"
    assert (out / "run" / "model.safetensors").read_bytes() == b"weights"
    assert sorted(p.name for p in out.iterdir()) == [".report-files.json", "figures", "model.onnx", "report.html",
                                                     "report.json", "report.md", "run"]  # no staging folder left
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _fail_writing_html(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        report.write_report(out, "t", sections, {"a": 3}, {"figures/02_new.png": b"png3"})
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    (tmp_path / "outside").write_bytes(b"x")
    (out / ".report-files.json").write_text(json.dumps(["..", "../outside", str(tmp_path / "outside")]))
    monkeypatch.undo()  # writes work again
    report.write_report(out, "t", sections, {"a": 4})  # a damaged file list never reaches outside the folder
    assert (tmp_path / "outside").read_bytes() == b"x" and (out / "run" / "model.safetensors").exists()


def test_report_folder_per_source_and_replacement_note(tmp_path):
    from zoo.report import default_report_dir, replaced_note, write_report

    assert default_report_dir("lenet5.cifar10", "lenet5.cifar10") == Path("reports/lenet5.cifar10")
    assert default_report_dir("lenet5.cifar10", "art/lenet5.cifar10.onnx") == Path("reports/lenet5.cifar10-onnx")
    assert default_report_dir("lenet5.cifar10", Path("a/lenet5.cifar10.pt")) == Path("reports/lenet5.cifar10-torchscript")
    assert default_report_dir("lenet5.mnist", "runs/x/model.safetensors") == Path("reports/lenet5.mnist-safetensors")
    tag = {"model": "lenet5.cifar10", "backends": ["torch", "onnxruntime"]}
    assert replaced_note(tmp_path / "new", tag) is None  # nothing there
    write_report(tmp_path / "r", "t", [], {"source": tag, "results": []})
    assert replaced_note(tmp_path / "r", tag) is None  # the same source: a refresh
    note = replaced_note(tmp_path / "r", {"model": "a/lenet5.cifar10.onnx", "backends": ["onnxruntime"]})
    assert note == f"note: replaced the report of lenet5.cifar10 (torch, onnxruntime) in {tmp_path / 'r'}; " \
                   "use --out to keep both"
    write_report(tmp_path / "old", "t", [], {"results": []})  # written before reports recorded their source
    assert "does not record what it evaluated" in replaced_note(tmp_path / "old", tag)


def test_flip_tta_is_refused_for_digits(data_home, capsys):
    """A mirrored digit is another symbol: flip TTA on MNIST printed 85.84% for a 99.44% model. Refused, before the
    model is even loaded, in Python and on the command line (rc 2, no number printed)."""
    from zoo.cli import main

    make_cached_split("mnist", n=40, size=28, chans=1, split="test")
    msg = r"tta=True \(--tta\): mnist's labels change under a horizontal flip"
    with pytest.raises(ZooError, match=msg):
        zoo.evaluate("missing.safetensors", "mnist", tta=True)  # not "does not exist": refused first
    make_cached_split("digits1", n=40, size=28, chans=1, split="test")  # unknown grayscale datasets: no flips
    with pytest.raises(ZooError, match=r"tta=True \(--tta\): digits1's labels"):
        zoo.evaluate(zoo.create_model("mlp2"), "digits1", tta=True)
    assert main(["eval", "lenet5.mnist", "--tta", "--out", str(data_home / "rep")]) == 2
    out, err = capsys.readouterr()
    assert "error: tta=True (--tta): mnist's labels" in err and "top-1" not in out
    assert not (data_home / "rep").exists()


def test_tta_is_labelled_in_every_report_format(gen_test, tmp_path):
    from zoo.report import TTA_NOTE, eval_report

    torch.manual_seed(0)
    model = zoo.create_model("mlp2", dataset="cifar10")
    r = zoo.evaluate(model, "evalgen", tta=True, batch_size=128)
    files = eval_report([r], tmp_path / "rep")
    res = json.loads(files["json"].read_text())["results"][0]
    assert res["top1"] == r.top1 and res["top1_flip_tta"] == r.top1_flip_tta and res["tta"] is True
    md, page = files["md"].read_text(), files["html"].read_text()
    assert "| flip-TTA top1 |" in md and f"| {r.top1_flip_tta:.4f} |" in md and TTA_NOTE in md
    assert "<th>flip-TTA top1</th>" in page and "flip-TTA top1: top-1 of each image" in page
    plain = eval_report([zoo.evaluate(model, "evalgen", batch_size=128)], tmp_path / "plain")
    assert "flip-TTA" not in plain["md"].read_text() and "flip-TTA" not in plain["html"].read_text()


def test_nonfinite_weights_warn_and_are_flagged(gen_test, tmp_path):
    """NaN weights make every logit NaN and every prediction class 0: a plausible-looking ~10%, never silently."""
    import warnings

    from export import to_onnx
    from zoo.report import eval_report

    model = zoo.create_model("lenet5_bn", dataset="cifar10").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy model: no warning
        ok = zoo.evaluate(model, "evalgen", batch_size=128)
    assert ok.nonfinite_weights == [] and ok.nonfinite_logits == 0 and ok.problems == []
    with torch.no_grad():
        model.features[0][0].weight[0, 0, 0, 0] = float("nan")
        model.fc.bias[1] = float("inf")
    model.features[0][1].running_var[0] = float("nan")  # a buffer counts too
    with pytest.warns(RuntimeWarning) as caught:
        r = zoo.evaluate(model, "evalgen", batch_size=128)
    assert len(caught) == 1  # once per evaluation, however many tensors
    text = str(caught[0].message)
    assert text.startswith("zoo.evaluate(lenet5_bn on evalgen/test): 3 parameter/buffer tensors of lenet5_bn hold "
                           "NaN or Inf (features.0.0.weight, fc.bias, features.0.1.running_var)")
    assert r.nonfinite_weights == ["features.0.0.weight", "fc.bias", "features.0.1.running_var"] and r.nonfinite_logits == 300
    assert "WARNING: 3 parameter/buffer tensors of lenet5_bn hold NaN or Inf" in r.summary()
    files = eval_report([r], tmp_path / "rep")
    res = json.loads(files["json"].read_text())["results"][0]
    assert res["nonfinite_weights"] == r.nonfinite_weights and res["nonfinite_logits"] == 300
    md, page = files["md"].read_text(), files["html"].read_text()
    assert md.index("## Warnings") < md.index("## Summary") and "**WARNING**: torch: 3 parameter/buffer" in md
    assert "<li><b>WARNING</b>: torch: 3 parameter/buffer tensors" in page
    onnx = to_onnx(model, torch.zeros(1, 3, 32, 32), tmp_path / "nan.onnx", verify=False)
    with pytest.warns(RuntimeWarning, match="hold NaN or Inf"):
        exported = zoo.evaluate(onnx, "evalgen", batch_size=128)  # an exported file's initializers are checked
    assert exported.nonfinite_weights and exported.nonfinite_logits == 300


@pytest.mark.parametrize("device", ["bogus", "meta", 5, None])
def test_bad_device_is_one_error(gen_test, device):
    """device='meta' was a RuntimeError from Tensor.item(), 'bogus' one from torch.device, 5 an AttributeError."""
    model = zoo.create_model("lenet5", num_classes=10, in_chans=3, img_size=32)
    with pytest.raises(zoo.ZooError, match="device must be 'cpu' or 'cuda'"):
        zoo.evaluate(model, "evalgen", device=device)


def test_report_run_log_and_out_checked(gen_test, tmp_path):
    """A --run-log that did not exist was skipped silently (rc 0, no curves), /etc/passwd or a malformed line was a
    JSONDecodeError traceback, and an --out that is a file a FileExistsError: each is one ZooError naming the file."""
    from zoo.report import eval_report

    r = zoo.evaluate(zoo.create_model("lenet5", num_classes=10, in_chans=3, img_size=32), "evalgen", batch_size=128)
    bad = tmp_path / "log.jsonl"
    for text, word in (("not json\n", "line 1: not JSON"), ('{"epoch": 1}\n', "line 1: not an epoch row"),
                       ("[1, 2]\n", "not an epoch row")):
        bad.write_text(text)
        with pytest.raises(zoo.ZooError, match=word):
            eval_report([r], tmp_path / "rep", run_log=bad)
    with pytest.raises(zoo.ZooError, match="is not a file"):
        eval_report([r], tmp_path / "rep", run_log=tmp_path / "missing.jsonl")
    (tmp_path / "afile").write_text("mine\n")
    with pytest.raises(zoo.ZooError, match="is a file, not a folder"):
        eval_report([r], tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "mine\n"
    bad.write_text('{"epoch": 1, "train_loss": 0.5, "train_acc": 0.8}\n')
    assert eval_report([r], tmp_path / "ok", run_log=bad)["html"].is_file()


def test_wrong_model_object_or_shape_is_one_error(gen_test):
    """evaluate(5, ...) was an AttributeError, a 1-channel model on 3-channel images a conv RuntimeError, a head of
    the wrong width (without the fc attribute that names its width) an error deep in the metrics."""
    with pytest.raises(zoo.ZooError, match="expected an nn.Module"):
        zoo.evaluate(5, "evalgen")
    with pytest.raises(zoo.ZooError, match="cannot run on evalgen images"):
        zoo.evaluate(zoo.create_model("lenet5", num_classes=10, in_chans=1, img_size=32), "evalgen")
    with pytest.raises(zoo.ZooError, match=r"has 4 classes|expected \(1, 10\) logits"):
        zoo.evaluate(zoo.create_model("lenet5", num_classes=4, in_chans=3, img_size=32), "evalgen")
