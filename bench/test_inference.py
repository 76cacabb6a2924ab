"""Inference throughput per model x backend x batch size; ratios against eager torch in the same run."""

from __future__ import annotations

import pytest
import torch

import zoo

from .conftest import QUICK, throughput

# Every trainable model on the CPU (resnet18_tv is the ImageNet topology, a fine-tuning target); on CUDA, where
# each compiled case costs device minutes, the models with speed goals (LeNet-5, ResNet-18) and ResNet-9.
MODELS = [n for n in zoo.list_models() if n != "resnet18_tv"] if not QUICK else ["lenet5"]
CUDA_MODELS = ("lenet5", "resnet9", "resnet18")
BATCHES = [1, 64, 1024] if not QUICK else [1, 64]
# LeNet-5 is launch-bound at batch 1024 on a GPU (~10 kernels for 1024 images): a large batch shows its throughput.
LARGE_BATCH = 16384
CPU_BACKENDS = ["eager", "compile", "torchscript", "onnxruntime"] if not QUICK else ["eager", "torchscript",
                                                                                     "onnxruntime"]
CUDA_BACKENDS = ["cuda_eager_fp32", "cuda_bf16_cl", "cuda_compile_bf16", "cuda_max_autotune_bf16",
                 "cuda_graphs_bf16", "cuda_fused_triton", "ort_cuda"]
# Compiled and graph-captured cases run under no_grad: inference_mode tensors cannot be captured or frozen.
NO_GRAD = ("compile", "cuda_compile_bf16", "cuda_max_autotune_bf16", "cuda_graphs_bf16", "cuda_fused_triton")
_ref: dict[tuple, float] = {}


def make_runner(model: torch.nn.Module, backend: str, x: torch.Tensor, tmp, extra: dict):
    from export import load_exported, to_onnx, to_torchscript

    if backend == "eager":
        return lambda: model(x)
    if backend == "compile":
        m = torch.compile(model)
        return lambda: m(x)
    if backend == "torchscript":
        m = load_exported(to_torchscript(model, x[:1], tmp / "m.pt", verify=False))
        return lambda: m(x)
    if backend in ("onnxruntime", "ort_cuda"):
        dev = "cuda" if backend == "ort_cuda" else "cpu"
        m = load_exported(to_onnx(model.cpu(), x[:1].cpu(), tmp / "m.onnx", verify=False), device=dev)
        if dev == "cuda" and "CUDAExecutionProvider" not in m.providers:
            pytest.skip("onnxruntime-gpu not installed")
        model.to(x.device)
        return lambda: m(x)
    # CUDA variants
    m = model.cuda()
    if backend == "cuda_eager_fp32":
        return lambda: m(x)
    if backend == "cuda_fused_triton":
        # LeNet-5 as two Triton kernels (zoo/models/lenet_triton.py): their launch configs tuned on this batch, the
        # result checked against eager fp32 before it is timed (an indexing bug shows as errors the size of the
        # logits, bf16 rounding as ~1% of them), replayed as a CUDA graph like cuda_graphs_bf16 (Triton's launcher
        # costs ~20 us a kernel, LeNet-5 ~70 us a batch of 1024 at the goal's 15M img/s).
        from zoo.models.lenet_triton import fuse_lenet

        f, xf = fuse_lenet(m), x.to(torch.bfloat16).contiguous()
        extra["tuning_ms"] = f.tune(xf)
        ref, got = m(x), f(xf)
        rel = float((got - ref).abs().max() / ref.abs().max())
        assert rel < 0.05, f"fused LeNet-5 differs from eager fp32 by {rel:.3f} of the largest logit"
        agree = float((ref.argmax(1) == got.argmax(1)).float().mean())
        extra.update(max_rel_err_vs_eager=rel, top1_agreement_vs_eager=agree)
        return _graphed(lambda: f(xf))
    m = m.to(memory_format=torch.channels_last).to(torch.bfloat16)
    xb = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    if backend == "cuda_bf16_cl":
        return lambda: m(xb)
    if backend == "cuda_compile_bf16":
        mc = torch.compile(m)
        return lambda: mc(xb)
    if backend == "cuda_max_autotune_bf16":
        # Inductor times its Triton templates against cuDNN/cuBLAS for each shape (a Triton conv can take the ReLU
        # and residual add into its epilogue: one pass over the activations fewer), replays the whole forward as a
        # CUDA graph, and freezing folds each BatchNorm into its conv's weights.
        import torch._inductor as inductor

        mc = torch.compile(m, options={**inductor.list_mode_options("max-autotune"), "freezing": True})
        return lambda: mc(xb)
    return _graphed(lambda: m(xb))


def _graphed(fn):
    """Capture one call of fn (static input/output buffers) as a CUDA graph; the replay is the runner."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):  # warm-up off the capture: cuDNN/Triton choose and compile their kernels here
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


@pytest.mark.parametrize("batch", [*BATCHES, LARGE_BATCH])
@pytest.mark.parametrize("backend", CPU_BACKENDS + CUDA_BACKENDS)
@pytest.mark.parametrize("name", MODELS)
def test_inference(benchmark, tmp_path, name, backend, batch):
    cuda = backend.startswith("cuda") or backend == "ort_cuda"
    if batch == LARGE_BATCH and not (cuda and name == "lenet5"):
        pytest.skip("the large batch is measured for LeNet-5 on CUDA only")
    if cuda and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if cuda and name not in CUDA_MODELS:
        pytest.skip(f"CUDA cases measure {', '.join(CUDA_MODELS)}")
    if backend == "cuda_fused_triton" and not name.startswith("lenet5"):
        pytest.skip("the fused Triton kernels implement LeNet-5")
    model = zoo.create_model(name, dataset="cifar10").eval()
    x = torch.randn(batch, 3, 32, 32, device="cuda" if cuda else "cpu")
    sync = torch.cuda.synchronize if cuda else None
    with torch.no_grad() if backend in NO_GRAD else torch.inference_mode():
        fn = make_runner(model.to(x.device), backend, x, tmp_path, benchmark.extra_info)
        reps = max(1, 2048 // batch) if cuda else max(1, 256 // batch)

        def many():
            for _ in range(reps):
                fn()

        ips = throughput(benchmark, many, reps * batch, sync=sync, warmup=3, rounds=3 if cuda else None)
    key = (name, batch, "cuda" if cuda else "cpu")
    if backend in ("eager", "cuda_eager_fp32"):
        _ref[key] = ips
    if key in _ref:
        benchmark.extra_info["ratio_vs_eager"] = ips / _ref[key]
    benchmark.extra_info.update(model=name, backend=backend, batch=batch)
