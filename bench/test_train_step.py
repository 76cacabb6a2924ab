"""One optimizer step per model (forward + backward + SGD), img/s; ratio against lenet5 in the same run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import zoo

from .conftest import QUICK, throughput

MODELS = ["lenet5", "lenet5_bn", "mlp4", "convnet_bn", "resnet9", "resnet18"] if not QUICK else ["lenet5", "mlp4"]
_ref: dict[str, float] = {}


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("name", MODELS)
def test_train_step(benchmark, name, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cuda = device == "cuda"
    batch = 512 if cuda else 128
    model = zoo.create_model(name, dataset="cifar10").to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    reps = 10 if cuda else 1
    ips = throughput(benchmark, lambda: [step() for _ in range(reps)], reps * batch,
                     sync=torch.cuda.synchronize if cuda else None, warmup=2)
    if name == "lenet5":
        _ref[device] = ips
    if device in _ref:
        benchmark.extra_info["ratio_vs_lenet5"] = ips / _ref[device]
    benchmark.extra_info.update(model=name, device=device, batch=batch)
