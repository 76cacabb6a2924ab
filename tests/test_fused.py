"""fuse_lenet: the two-kernel Triton LeNet-5 gives the module's logits (Triton's CPU interpreter here; on CUDA the
benchmark checks the compiled kernels against eager torch before it times them)."""

import pytest
import torch

import zoo
from zoo.errors import ZooError

from .conftest import run_cli

# Each case: model, in_chans, size, classes, config overrides, taps a tl.dot. Together they cover avg and max pooling,
# ReLU and tanh, folded conv and fc BatchNorm, dropout, the padded 28x28 input, 1 and 3 channels, 10 and 100
# classes (a classifier wider than 16), and a tap count that is not a multiple of the tl.dot depth.
CASES = [
    ("lenet5", 1, 28, 10, {}, 16),
    ("lenet5", 3, 32, 100, {"act": "tanh"}, 64),
    ("lenet5_bn", 3, 32, 10, {}, 32),
    ("lenet5_dropout", 1, 28, 10, {}, 64),
]

CODE = """
import torch, zoo
from zoo.models.lenet_triton import KernelConfig, fuse_lenet
torch.manual_seed(0)
for name, chans, size, nc, over, bk in {cases}:
    m = zoo.create_model(name, in_chans=chans, img_size=size, num_classes=nc, **over)
    for mod in m.modules():  # non-trivial BatchNorm statistics, so folding them is tested
        if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            mod.running_mean.uniform_(-0.5, 0.5), mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(-1.5, 1.5), mod.bias.data.uniform_(-0.3, 0.3)
    m.eval()
    x = torch.randn(18, chans, size, size)  # 18 images: the last block of 16 is partly masked
    with torch.no_grad():
        ref = m(x)
        kw = dict(conv1=KernelConfig(64, bk, 4), head=KernelConfig(16, bk, 4))
        got = fuse_lenet(m, dtype=torch.float32, **kw)(x)
        bf = fuse_lenet(m, **kw)(x.bfloat16())
    err = (got - ref).abs().max().item()
    assert err < 1e-4, (name, chans, err)
    rel = ((bf - ref).abs().max() / ref.abs().max()).item()
    assert rel < 0.03, (name, chans, rel)  # bf16 weights and activations, fp32 accumulation
    print(name, chans, size, f"{{err:.1e}}", f"{{rel:.1e}}")
print("fused ok")
"""


@pytest.mark.slow
def test_fused_lenet_matches_module_in_interpreter():
    pytest.importorskip("triton")
    out = run_cli("-c", CODE.format(cases=CASES), env={"TRITON_INTERPRET": "1"}).stdout
    assert "fused ok" in out, out


def test_fused_lenet_refuses_what_it_cannot_run():
    pytest.importorskip("triton")
    from zoo.models.lenet_triton import KernelConfig, fuse_lenet

    with pytest.raises(ZooError, match="not a LeNet-5"):
        fuse_lenet(zoo.create_model("lenet5_wide", dataset="cifar10"))
    with pytest.raises(ZooError, match="not a LeNet-5"):
        fuse_lenet(zoo.create_model("mlp2", dataset="mnist"))
    with pytest.raises(ZooError, match="block_k"):
        fuse_lenet(zoo.create_model("lenet5", dataset="mnist"), head=KernelConfig(64, 24, 4))
    fused = fuse_lenet(zoo.create_model("lenet5", dataset="mnist"))
    with pytest.raises(ZooError, match="input channels"):
        fused(torch.zeros(2, 3, 28, 28))
    with pytest.raises(ZooError, match="features"):
        fused(torch.zeros(2, 1, 40, 40))
    if not torch.cuda.is_available():
        with pytest.raises(ZooError, match="CUDA device"):
            fused(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ZooError, match="tune times the kernels on a CUDA device"):  # even where forward() would run
        fused.tune(torch.zeros(2, 1, 28, 28))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the compiled kernels)")
def test_fused_lenet_on_cuda():
    from zoo.models.lenet_triton import fuse_lenet

    torch.manual_seed(0)
    for name in ("lenet5", "lenet5_bn"):
        m = zoo.create_model(name, dataset="cifar10").cuda().eval()
        x = torch.randn(3000, 3, 32, 32, device="cuda")  # not a multiple of either block
        with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            ref = m(x)
            got = fuse_lenet(m, dtype=torch.float32)(x)
            bf = fuse_lenet(m)(x.bfloat16())
            tuned = fuse_lenet(m)
            times = tuned.tune(x.bfloat16())
            bt = tuned(x.bfloat16())
        assert (got - ref).abs().max() < 1e-4, name
        assert (bf - ref).abs().max() / ref.abs().max() < 0.03, name
        assert (bt - ref).abs().max() / ref.abs().max() < 0.03, (name, times)
        assert set(times) == {"conv1", "head"} and str(tuned.conv1_config) == next(iter(times["conv1"]))


def test_fused_lenet_compiles_for_hopper(monkeypatch):
    """The interpreter runs the kernels as Python: this compiles them, with the arguments forward() passes, through
    Triton's real pipeline to an sm_90 (H100) cubin with the ptxas Triton ships, so a construct the GPU compiler
    rejects fails here, on a machine without a GPU."""
    triton = pytest.importorskip("triton")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: test_fused_lenet_on_cuda compiles and runs the kernels for it")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from zoo.models import lenet_triton as lt

    calls = []
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # lets forward() run on CPU tensors; _launch only records
    monkeypatch.setattr(lt, "_launch", lambda kernel, programs, args, meta: calls.append((kernel, args, meta)))
    for name, chans, size, over in (("lenet5_bn", 3, 32, {}), ("lenet5", 1, 28, {"act": "tanh"})):
        m = zoo.create_model(name, in_chans=chans, img_size=size, num_classes=10, **over).eval()
        lt.fuse_lenet(m)(torch.zeros(2, chans, size, size))
    types = {torch.bfloat16: "*bf16", torch.float32: "*fp32"}
    for kernel, args, meta in calls:
        meta = dict(meta, F32=0)  # what runs on a GPU: bf16 tensor-core dots
        num_warps = meta.pop("num_warps")
        sig = {n: types[a.dtype] if isinstance(a, torch.Tensor) else "i32" for n, a in zip(kernel.arg_names, args)}
        sig.update(dict.fromkeys(meta, "constexpr"))
        try:
            src = ASTSource(fn=kernel, signature=sig,
                            constexprs={(kernel.arg_names.index(k),): v for k, v in meta.items()})
        except TypeError as e:  # pragma: no cover - another Triton's ASTSource
            pytest.skip(f"triton {triton.__version__}: ASTSource takes other arguments ({e})")
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
        assert compiled.asm.get("cubin"), kernel
    assert len(calls) == 4
