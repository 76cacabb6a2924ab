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
    tta = zoo.evaluate(model, "evalgen", tta=True)
    assert tta.tta and tta.num_samples == 300 and r.top1_flip_tta is None
    both = zoo.evaluate(model, "evalgen", report_flip_tta=True)  # single-view metrics + the TTA top-1, one pass
    assert both.top1 == r.top1 and both.top1_flip_tta == pytest.approx(tta.top1)
    np.testing.assert_allclose(both.logits, r.logits)


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


def test_report_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from zoo import report

    sections = [("Summary", "text", "<p>text</p>")]
    files = report.write_report(tmp_path / "r", "t", sections, {"a": 1}, {"figures/x.png": b"png"})
    assert (tmp_path / "r" / "figures" / "x.png").read_bytes() == b"png"
    assert json.loads(files["json"].read_text()) == {"a": 1} and "<p>text</p>" in files["html"].read_text()
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["figures", "report.html", "report.json",
                                                                   "report.md"]  # no staging folder left
    real = Path.write_bytes

    def fail_on_html(self, data):
        if self.name == "report.html":
            raise OSError("disk full")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", fail_on_html)
    with pytest.raises(OSError, match="disk full"):
        report.write_report(tmp_path / "s", "t", sections, {"a": 1}, {"figures/x.png": b"png"})
    assert list((tmp_path / "s").iterdir()) == []  # neither figures nor a partial report
