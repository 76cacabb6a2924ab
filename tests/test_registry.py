"""Every registered model: shapes for each input size, backward, finiteness, TorchScript, ONNX parity."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.errors import ZooError

EXPECTED = {"lenet5", "lenet5_max", "lenet5_bn", "lenet5_dropout", "lenet5_wide", "mlp2", "mlp4", "convnet_bn",
            "resnet9", "resnet18", "resnet18_tv"}
SHAPES = [(1, 28), (3, 32), (3, 96)]  # MNIST, CIFAR/CINIC, STL-10
MODELS = zoo.list_models()


def test_list_models_has_every_entry():
    assert EXPECTED <= set(MODELS)
    assert zoo.list_models("lenet5*") == sorted(m for m in EXPECTED if m.startswith("lenet5"))


@pytest.mark.parametrize("chans,size", SHAPES)
@pytest.mark.parametrize("name", MODELS)
def test_forward_backward(name, chans, size):
    torch.manual_seed(0)
    model = zoo.create_model(name, in_chans=chans, img_size=size, num_classes=7)
    x = torch.randn(3, chans, size, size)
    out = model(x)
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def model_and_input(name: str, batch: int):
    """An eval-mode model at its default dataset's shape, and a random batch for it."""
    spec = zoo.registry.dataset_spec(zoo.registry.default_dataset(name))
    return zoo.create_model(name).eval(), torch.randn(batch, spec.in_chans, spec.img_size, spec.img_size)


@pytest.mark.parametrize("name", MODELS)
def test_torchscript_roundtrip(name, tmp_path):
    from export import load_exported, to_torchscript

    model, x = model_and_input(name, 4)
    path = to_torchscript(model, x[:1], tmp_path / f"{name}.pt")
    with torch.inference_mode():
        assert torch.allclose(load_exported(path)(x), model(x), atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_onnx_export_parity(name, tmp_path):
    import json

    from export import load_exported, to_onnx

    model, x = model_and_input(name, 5)
    path = to_onnx(model, x[:1], tmp_path / f"{name}.onnx")
    report = json.loads(path.with_suffix(".onnx.verify.json").read_text())
    assert report["passed"] and all(c["max_abs_logit_diff"] <= 1e-4 for c in report["checks"])
    with torch.inference_mode():
        assert (load_exported(path)(x) - model(x)).abs().max() <= 1e-4  # dynamic batch: 5 != export batch 1


@pytest.mark.slow
def test_torch_compile_small_model():
    model = zoo.create_model("lenet5").eval()
    x = torch.randn(8, 1, 28, 28)
    compiled = torch.compile(model)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)


def test_unknown_model_suggests_closest():
    with pytest.raises(ZooError, match="lenet5_bn"):
        zoo.create_model("lenet5bn")


def test_unknown_option_lists_fields():
    with pytest.raises(ZooError, match="dropout"):
        zoo.create_model("lenet5", dropuot=0.1)


def test_option_types_checked():
    for kw, msg in (({"bn": "yes"}, "bn='yes': expected bool"), ({"dropout": "0.2"}, "expected float"),
                    ({"fc": 5}, "fc=5: expected tuple"), ({"act": "gelu"}, "act relu|tanh")):
        with pytest.raises(ZooError, match=msg):
            zoo.create_model("lenet5", **kw)
    m = zoo.create_model("lenet5", channels=[8, 16], dropout=0)  # a list for a tuple, an int for a float
    assert m.cfg.channels == (8, 16) and m.features[1][0].out_channels == 16 and m.cfg.dropout == 0


def test_overrides_and_xavier():
    m = zoo.create_model("mlp4", dropout=0.3)
    assert m.cfg.dropout == 0.3 and any(isinstance(x, torch.nn.Dropout) for x in m.modules())
    torch.manual_seed(0)
    a = zoo.create_model("lenet5")
    torch.manual_seed(0)
    b = zoo.create_model("lenet5", init="xavier")
    assert not torch.equal(a.features[0][0].weight, b.features[0][0].weight)
    assert torch.count_nonzero(b.fc.bias) == 0
    with pytest.raises(ZooError, match="xavier"):
        zoo.create_model("lenet5", init="he")


def test_lenet_variants_are_config():
    from zoo.models.lenet import LeNet

    for n in ("lenet5", "lenet5_max", "lenet5_bn", "lenet5_dropout", "lenet5_wide"):
        assert type(zoo.create_model(n)) is LeNet
    bn = zoo.create_model("lenet5_bn")
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules()) == 2
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in bn.modules()) == 2
    wide = zoo.create_model("lenet5_wide", dataset="cifar10")
    convs = [m for m in wide.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (3, 3)), (64, (4, 4))]
    assert [m.out_features for m in wide.modules() if isinstance(m, torch.nn.Linear)] == [600, 200, 10]


def test_resnet18_tv_matches_torchvision_keys():
    import torchvision

    tv = torchvision.models.resnet18(num_classes=10)
    ours = zoo.create_model("resnet18_tv")
    ours.load_state_dict(tv.state_dict())  # strict: same keys and shapes
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), tv.eval()(x), atol=1e-5)


def test_freeze_and_reset_classifier():
    m = zoo.create_model("resnet18")
    m.freeze(train_last=2)
    trainable = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"}
    m.reset_classifier(5)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_hubconf_local(tmp_path):
    from .conftest import REPO

    m = torch.hub.load(str(REPO), "lenet5", source="local", trust_repo=True, pretrained=False)
    assert m(torch.randn(1, 1, 28, 28)).shape == (1, 10)
    m = torch.hub.load(str(REPO), "lenet5", source="local", trust_repo=True, dataset="cifar10")  # shipped weights
    assert m.zoo_meta["tag"] == "lenet5.cifar10" and not m.training
    with pytest.raises(ZooError, match="fixed config"):  # refused, not silently dropped
        torch.hub.load(str(REPO), "lenet5", source="local", trust_repo=True, num_classes=5)


@pytest.mark.parametrize("name,kw,msg", [
    ("lenet5", {"dropout": 2.0}, "LeNet option(s) out of range: dropout=2.0 (a probability in [0, 1))"),
    ("lenet5", {"dropout": float("nan")}, "dropout=nan"),
    ("lenet5", {"channels": [0, 0]}, "channels=(0, 0) (positive integers"),
    ("lenet5", {"channels": [6]}, "one kernel size per conv block"),
    ("lenet5", {"fc": [120, -1]}, "fc=(120, -1)"),
    ("lenet5", {"pool": "min"}, "pool='min' (avg or max)"),
    ("mlp4", {"hidden": [128, 0]}, "MLP option(s) out of range: hidden=(128, 0)"),
    ("mlp2", {"act": "gelu"}, "act='gelu' (one of relu, tanh)"),
    ("convnet_bn", {"dropout": 1.0}, "ConvNet option(s) out of range: dropout=1.0"),
    ("convnet_bn", {"pool": 0}, "pool=0"),
    ("resnet18", {"widths": [64, 128, 0, 512]}, "ResNet option(s) out of range: widths=(64, 128, 0, 512)"),
    ("resnet18", {"layers": [2, 2, 2]}, "layers=(2, 2, 2) (four positive integers"),
    ("resnet18", {"dropout": -0.1}, "dropout=-0.1"),
    ("resnet9", {"scale": float("inf")}, "ResNet9 option(s) out of range: scale=inf"),
])
def test_config_values_checked_by_the_family(name, kw, msg):
    """The family's config validates itself (__post_init__), before any layer is built: one ZooError naming it."""
    with pytest.raises(ZooError) as e:
        zoo.create_model(name, **kw)
    assert msg in str(e.value)


def test_config_checks_apply_to_the_dataclass_itself():
    from zoo.models.lenet import LeNetConfig

    with pytest.raises(ZooError, match="dropout=1.5"):
        LeNetConfig(dropout=1.5)
    assert LeNetConfig(dropout=0.5).dropout == 0.5 and zoo.create_model("mlp2", hidden=[]).fc.in_features == 784


@pytest.mark.parametrize("kw, word", [
    ({"num_classes": 0}, "num_classes"), ({"num_classes": -1}, "num_classes"), ({"num_classes": True}, "num_classes"),
    ({"num_classes": 1.5}, "num_classes"), ({"num_classes": "10"}, "num_classes"), ({"in_chans": 0}, "in_chans"),
    ({"in_chans": -3}, "in_chans"), ({"img_size": 0}, "img_size"), ({"img_size": 10**6}, "img_size"),
    ({"img_size": float("nan")}, "img_size"),
])
def test_shape_arguments_checked_not_defaulted(kw, word):
    """0 used to mean "the dataset's" (create_model('lenet5', num_classes=0) built a 10-class head with rc 0, weights
    metadata saying 0 channels built a 1-channel model); strings and NaN failed deep in torch; 10**6 px asked for
    terabytes. Each is now one ZooError naming the argument."""
    with pytest.raises(ZooError, match=word):
        zoo.create_model("lenet5", **kw)
    assert zoo.create_model("lenet5", num_classes=3, in_chans=3, img_size=32).zoo_name == "lenet5"


def test_failed_allocation_is_a_zoo_error():
    """Widths from a hostile weights file's config: the allocation fails, as one ZooError naming the model."""
    with pytest.raises(ZooError, match="cannot build lenet5"):
        zoo.create_model("lenet5", channels=[10**6, 10**6])


def test_list_models_pattern_must_be_a_string():
    """list_models(5) was a TypeError from fnmatch ('expected str, bytes or os.PathLike')."""
    with pytest.raises(ZooError, match="pattern must be a wildcard string"):
        zoo.list_models(5)
    assert zoo.list_models("lenet5") == ["lenet5"]
