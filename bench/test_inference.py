"""Inference throughput per model x backend x batch size; ratios against eager torch in the same run.

`onnxruntime_int8` is the statically quantized file of `python -m export onnx TAG --int8`, built from the shipped
CIFAR-10 weights, at batch 64 only (the size of the INT8 speed goals), timed alternately with the fp32 ONNX file of
the same weights: `ratio_vs_fp32_ort` is its speed-up, and with CIFAR-10 ingested the test-set top-1 of both files is
recorded next to it (`top1_fp32`, `top1_int8`).
"""

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
CPU_BACKENDS = ["eager", "compile", "torchscript", "onnxruntime", "onnxruntime_int8"] if not QUICK else [
    "eager", "torchscript", "onnxruntime", "onnxruntime_int8"]
INT8_BATCH = 64
CUDA_BACKENDS = ["cuda_eager_fp32", "cuda_bf16_cl", "cuda_compile_bf16", "cuda_max_autotune_bf16",
                 "cuda_graphs_bf16", "cuda_fused_triton", "ort_cuda"]
# Compiled and graph-captured cases run under no_grad: inference_mode tensors cannot be captured or frozen.
NO_GRAD = ("compile", "cuda_compile_bf16", "cuda_max_autotune_bf16", "cuda_graphs_bf16", "cuda_fused_triton")
_ref: dict[tuple, float] = {}


def int8_runners(name: str, x: torch.Tensor, tmp, extra: dict, calib_split):
    """(int8 runner, fp32 runner) for the shipped CIFAR-10 weights of `name`, quantized as `export --int8` does
    (calibrated on the recorded train subset: the ingested split, else the generated stand-in); the test-set
    top-1 of both files goes into extra_info when CIFAR-10 is ingested."""
    from export import load_exported, to_onnx
    from zoo.artifacts import CALIBRATION_SEED, calibration_subset, to_onnx_int8
    from zoo.data import Loader, open_split
    from zoo.errors import ZooError

    model = zoo.load(f"{name}.cifar10")
    idx = calibration_subset(len(calib_split))
    calib = torch.cat([b for b, _ in Loader(calib_split, 256, augment=None, shuffle=False, indices=idx)])
    try:
        test = open_split("cifar10", "test")
        xs, ys = zip(*Loader(test, 1000, augment=None, shuffle=False))
        data = (torch.cat(xs), torch.cat(ys))
    except ZooError:
        data = None
    # max_top1_drop=1: the benchmark records the accuracy goal (0.3 points) rather than refusing the file.
    p8 = to_onnx_int8(model, x[:1], tmp / "m.int8.onnx", calibration=calib, test=data, verify=data is not None,
                      max_top1_drop=1.0, calibration_info={"seed": CALIBRATION_SEED, "count": len(idx)})
    p32 = to_onnx(model, x[:1], tmp / "m.onnx", verify=False)
    if data is not None:
        import json

        r = json.loads((tmp / "m.int8.onnx.verify.json").read_text())
        extra.update(top1_fp32=r["top1_fp32"], top1_int8=r["top1_int8"], top1_agreement=r["top1_agreement"],
                     test_images=r["test_images"], top1_within_0p3=r["top1_int8"] >= r["top1_fp32"] - 0.003)
    extra["calibration"] = {"split": "train" if data is not None else "generated", "count": len(idx), "seed": 0}
    m8, m32 = load_exported(p8), load_exported(p32)
    return (lambda: m8(x)), (lambda: m32(x))


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


def _int8_case(benchmark, tmp_path, name, batch, cifar_like):
    import time

    x = torch.randn(batch, 3, 32, 32)
    reps = max(1, 256 // batch)
    with torch.inference_mode():
        f8, f32 = int8_runners(name, x, tmp_path, benchmark.extra_info, cifar_like)

        def many(fn):
            def run():
                for _ in range(reps):
                    fn()
            return run

        # The two files alternate, round by round, and the speed-up is the median of the rounds' ratios: a busy
        # neighbour on a shared machine slows both files of a round alike, and its bursts fall out of the median.
        t8, t32 = [], []
        for fn in (f8, f32):
            many(fn)()  # warm-up: ORT's arena and kernel choice
        for _ in range(3 if QUICK else 15):
            for fn, ts in ((f8, t8), (f32, t32)):
                t = time.perf_counter()
                many(fn)()
                ts.append(time.perf_counter() - t)
        ips = throughput(benchmark, many(f8), reps * batch, warmup=1)
    ips32 = reps * batch / sorted(t32)[len(t32) // 2]
    ratios = sorted(b / a for a, b in zip(t8, t32))
    ratio = ratios[len(ratios) // 2]
    benchmark.extra_info["int8_speedup_rounds"] = [round(r, 3) for r in ratios]  # not "ratio_*": one number each
    e = benchmark.extra_info
    e["ratio_vs_fp32_ort"] = ratio  # first ratio key: the one bench/report.py shows
    e.update(fp32_ort_images_per_s=ips32, recommended=ratio >= 1, model=name, backend="onnxruntime_int8", batch=batch)
    key = (name, batch, "cpu")
    if key in _ref:
        e["ratio_vs_eager"] = ips / _ref[key]


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
def test_inference(benchmark, tmp_path, name, backend, batch, cifar_like):
    cuda = backend.startswith("cuda") or backend == "ort_cuda"
    if backend == "onnxruntime_int8":
        if batch != INT8_BATCH:
            pytest.skip(f"INT8 is measured at batch {INT8_BATCH}, the batch of its goals")
        if f"{name}.cifar10" not in zoo.list_pretrained() or name.startswith("mlp"):
            pytest.skip("INT8 is measured for the conv nets with shipped CIFAR-10 weights")
        return _int8_case(benchmark, tmp_path, name, batch, cifar_like)
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
