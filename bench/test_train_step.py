"""One optimizer step per model (forward + backward + SGD), img/s; ratio against lenet5 in the same run.

`cpu_bf16` is the CPU with bf16 autocast and channels_last (`zoo train --bf16 --channels-last`); its ratio is
against the same model's fp32 CPU step, so the README's advice for CPUs with AVX512-BF16/AMX rests on a figure."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import zoo

from .conftest import QUICK, throughput

MODELS = ["lenet5", "lenet5_bn", "mlp4", "convnet_bn", "resnet9", "resnet18"] if not QUICK else ["lenet5", "mlp4"]
_ref: dict[str, float] = {}
_fp32: dict[str, float] = {}


@pytest.mark.parametrize("mode", ["cpu", "cpu_bf16", "cuda"])
@pytest.mark.parametrize("name", MODELS)
def test_train_step(benchmark, name, mode):
    if mode == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cuda = mode == "cuda"
    device = "cuda" if cuda else "cpu"
    fast = mode != "cpu"  # bf16 autocast + channels_last, as `zoo train` does on CUDA
    batch = 512 if cuda else 128
    model = zoo.create_model(name, dataset="cifar10").to(device)
    if fast:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    if fast:
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=fast):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    reps = 10 if cuda else 1
    ips = throughput(benchmark, lambda: [step() for _ in range(reps)], reps * batch,
                     sync=torch.cuda.synchronize if cuda else None, warmup=2)
    if mode == "cpu":
        _fp32[name] = ips
    if mode == "cpu_bf16" and name in _fp32:
        benchmark.extra_info["ratio_vs_cpu_fp32"] = ips / _fp32[name]
    if name == "lenet5":
        _ref[mode] = ips
    if mode in _ref:
        benchmark.extra_info["ratio_vs_lenet5"] = ips / _ref[mode]
    benchmark.extra_info.update(model=name, device=device, mode=mode, batch=batch)
