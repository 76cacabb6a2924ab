"""LeNet-5 inference as two Triton kernels, for throughput on a GPU: `fuse_lenet(model)(x)`.

Why: LeNet-5 is 1.3 MFLOP per 32x32 image, and eager PyTorch runs it as a dozen small kernels with 3-16 channels,
each a pass over memory (conv, bias, act, pool, ..., fc): 2.9M img/s on an H100 at batch 1024 even replayed as a
CUDA graph (bench/results/cuda_infer1024.json), against a goal of 15M. Here the whole network is two passes.
Kernel 1 computes conv1 + bias + activation + 2x2 pool as an implicit GEMM (rows = (image, pooled position), one
`tl.dot` per block of taps and pool offset) and writes the pooled map once (bf16, 8 channels a pixel).
Kernel 2 takes a block of images and, for each pooled conv2 position, computes conv2 + bias + act + pool and
immediately multiplies it into fc1's accumulator, then applies fc2 and the classifier in registers: the 400
features, the hidden layers and the logits never touch memory. Eval-mode BatchNorm is folded into the conv/linear
weights and dropout is the identity, so every LeNet-5 variant (avg/max pool, ReLU/tanh, `bn`, `bn_fc`, dropout)
runs; `lenet5_wide` (BatchNorm after the pool) does not fit the folding and is refused.

`dtype=torch.float32` runs the dots in IEEE fp32 (the tests compare it with the module to 1e-4 under
TRITON_INTERPRET=1 on the CPU); the default bf16 feeds the tensor cores, accumulating in fp32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import ZooError
from .lenet import LeNet

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs without triton
    triton = None

C1P = 8  # channels a pixel of the pooled conv1 map holds (conv1 has at most 8): 16-byte bf16 rows
if triton is not None:

    @triton.jit
    def _act(v, TANH: tl.constexpr):
        if TANH:
            v = 2.0 * tl.sigmoid(2.0 * v) - 1.0
        else:
            v = tl.maximum(v, 0.0)
        return v

    @triton.jit
    def _pool(acc, v, AVG: tl.constexpr, LAST: tl.constexpr):
        """One more of a 2x2 window's four values into acc: the max, or the sum and, at the last, the mean."""
        if AVG:
            acc = acc + v
            if LAST:
                acc = acc * 0.25
        else:
            acc = tl.maximum(acc, v)
        return acc

    @triton.jit
    def _dot(a, b, F32: tl.constexpr):
        # F32 is constexpr 0 (bf16 tensor cores), 1 (IEEE fp32) or 2: bf16 operands upcast to fp32, for Triton's CPU
        # interpreter, whose bf16 tl.dot returns garbage (seen with triton 3.8); the values are the same bf16 ones.
        if F32 == 1:
            r = tl.dot(a, b, input_precision="ieee")
        elif F32 == 2:
            r = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
        else:
            r = tl.dot(a, b)
        return r

    @triton.jit
    def _conv1_at(x, w, bias, img, oy, ox, rmask, C: tl.constexpr, H: tl.constexpr, W: tl.constexpr,
                  P: tl.constexpr, KS: tl.constexpr, KP: tl.constexpr, KC: tl.constexpr, BM: tl.constexpr,
                  TANH: tl.constexpr, F32: tl.constexpr):
        """act(conv1 + bias) at output pixels (oy, ox) of images img: [BM, 16]."""
        cols = tl.arange(0, 16)
        acc = tl.zeros([BM, 16], dtype=tl.float32)
        # An element's address is a row part plus a tap part, so the [BM, KC] gather costs one add an element (the
        # index arithmetic, not the dot, is what a 3-channel conv spends its instructions on).
        row = img * (C * H * W) + (oy - P) * W + (ox - P)
        for kc in tl.static_range(KP // KC):
            k = kc * KC + tl.arange(0, KC)  # tap index c*KS*KS + ky*KS + kx
            ky = (k % (KS * KS)) // KS
            kx = k % KS
            m = rmask[:, None] & (k < C * KS * KS)[None, :]
            if P > 0:  # zero padding: only inputs smaller than the net's 32x32 (MNIST's 28) have taps outside
                iy = oy[:, None] + ky[None, :] - P
                ix = ox[:, None] + kx[None, :] - P
                m = m & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
            tap = (k // (KS * KS)) * (H * W) + ky * W + kx
            a = tl.load(x + row[:, None] + tap[None, :], mask=m, other=0.0)
            wk = tl.load(w + k[:, None] * 16 + cols[None, :])
            acc += _dot(a.to(wk.dtype), wk, F32)
        return _act(acc + tl.load(bias + cols)[None, :], TANH)

    @triton.jit
    def _conv1_pool_kernel(x, w, bias, s1, N, C: tl.constexpr, H: tl.constexpr, W: tl.constexpr, P: tl.constexpr,
                           KS: tl.constexpr, Q: tl.constexpr, KP: tl.constexpr, KC: tl.constexpr,
                           BM: tl.constexpr, AVG: tl.constexpr, TANH: tl.constexpr, F32: tl.constexpr,
                           CP: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)  # (image, pooled pixel), flattened
        rmask = rows < N * (Q * Q)
        img = rows // (Q * Q)
        py = (rows % (Q * Q)) // Q
        px = rows % Q
        out = _conv1_at(x, w, bias, img, 2 * py, 2 * px, rmask, C, H, W, P, KS, KP, KC, BM, TANH, F32)
        for d in tl.static_range(1, 4):
            v = _conv1_at(x, w, bias, img, 2 * py + d // 2, 2 * px + d % 2, rmask, C, H, W, P, KS, KP, KC, BM,
                          TANH, F32)
            out = _pool(out, v, AVG, d == 3)
        cols = tl.arange(0, 16)
        tl.store(s1 + rows[:, None] * CP + cols[None, :], out.to(s1.dtype.element_ty),
                 mask=rmask[:, None] & (cols < CP)[None, :])

    @triton.jit
    def _conv2_at(s1, w, bias, img, imask, oy, ox, Q1: tl.constexpr, KS: tl.constexpr, KP: tl.constexpr,
                  KC: tl.constexpr, CP: tl.constexpr, BB: tl.constexpr, TANH: tl.constexpr, F32: tl.constexpr):
        """act(conv2 + bias) at output pixel (oy, ox) of a block of images: [BB, 16]."""
        cols = tl.arange(0, 16)
        acc = tl.zeros([BB, 16], dtype=tl.float32)
        row = img * (Q1 * Q1 * CP)
        for kc in tl.static_range(KP // KC):
            k = kc * KC + tl.arange(0, KC)  # tap index (ky*KS + kx)*CP + c: CP channels a pixel are contiguous
            tap = k // CP
            iy = oy + tap // KS
            ix = ox + tap % KS
            m = imask[:, None] & (tap < KS * KS)[None, :]
            a = tl.load(s1 + row[:, None] + ((iy * Q1 + ix) * CP + k % CP)[None, :], mask=m, other=0.0)
            acc += _dot(a, tl.load(w + k[:, None] * 16 + cols[None, :]), F32)
        return _act(acc + tl.load(bias + cols)[None, :], TANH)

    @triton.jit
    def _conv2_head_kernel(s1, w2, b2, wf1, bf1, wf2, bf2, wf3, bf3, out, N, NC, Q1: tl.constexpr,
                           KS: tl.constexpr, Q2: tl.constexpr, KP: tl.constexpr, KC: tl.constexpr,
                           CP: tl.constexpr, F1P: tl.constexpr, F2P: tl.constexpr, NCP: tl.constexpr, BB: tl.constexpr,
                           AVG: tl.constexpr, TANH: tl.constexpr, F32: tl.constexpr):
        img = tl.program_id(0).to(tl.int64) * BB + tl.arange(0, BB)
        imask = img < N
        c16 = tl.arange(0, 16)
        f1 = tl.arange(0, F1P)
        h1 = tl.zeros([BB, F1P], dtype=tl.float32)
        for q in range(Q2 * Q2):  # pooled conv2 pixel q: its 16 channels are fc1 inputs c*Q2*Q2 + q
            oy = 2 * (q // Q2)
            ox = 2 * (q % Q2)
            v = _conv2_at(s1, w2, b2, img, imask, oy, ox, Q1, KS, KP, KC, CP, BB, TANH, F32)
            for d in tl.static_range(1, 4):
                u = _conv2_at(s1, w2, b2, img, imask, oy + d // 2, ox + d % 2, Q1, KS, KP, KC, CP, BB, TANH, F32)
                v = _pool(v, u, AVG, d == 3)
            wq = tl.load(wf1 + q * (16 * F1P) + c16[:, None] * F1P + f1[None, :])
            h1 += _dot(v.to(wq.dtype), wq, F32)
        h1 = _act(h1 + tl.load(bf1 + f1)[None, :], TANH)
        f2 = tl.arange(0, F2P)
        w = tl.load(wf2 + f1[:, None] * F2P + f2[None, :])
        h2 = _act(_dot(h1.to(w.dtype), w, F32) + tl.load(bf2 + f2)[None, :], TANH)
        nc = tl.arange(0, NCP)
        w = tl.load(wf3 + f2[:, None] * NCP + nc[None, :])
        logits = _dot(h2.to(w.dtype), w, F32) + tl.load(bf3 + nc)[None, :]
        tl.store(out + img[:, None] * NC + nc[None, :], logits, mask=imask[:, None] & (nc < NC)[None, :])


def _pad16(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _fold(lin: nn.Module, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a conv/linear followed by an eval-mode BatchNorm, as one affine map."""
    w = lin.weight.detach().double()
    b = lin.bias.detach().double() if lin.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    if bn is not None:
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        w = w * scale.view(-1, *([1] * (w.dim() - 1)))
        b = (b - bn.running_mean.double()) * scale + bn.bias.detach().double()
    return w, b


def _layers(seq: nn.Sequential, kind) -> tuple[nn.Module, nn.Module | None]:
    main = next(m for m in seq if isinstance(m, kind))
    bn = next((m for m in seq if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))), None)
    return main, bn


@dataclass(frozen=True)
class KernelConfig:
    """One kernel's launch shape: rows (kernel 1: (image, pooled pixel) rows; kernel 2: images) a program, taps a
    tl.dot (16, 32 or 64), warps a program."""

    block: int
    block_k: int
    num_warps: int


# Defaults chosen without a GPU at hand: large tiles that the ptxas of Triton 3.8 fits in registers without spilling
# for sm_90 (164 and 168 registers a thread; every config below is spill-free). FusedLeNet.tune measures them all on
# the device. Kernel 2 runs one program per block of images, so small blocks are there for small batches: at batch
# 1024 a block of 64 would use 16 of an H100's 132 SMs.
CONV1_CONFIGS = (KernelConfig(128, 16, 8), KernelConfig(64, 32, 4), KernelConfig(128, 32, 8), KernelConfig(64, 16, 4))
HEAD_CONFIGS = (KernelConfig(64, 32, 8), KernelConfig(64, 16, 8), KernelConfig(32, 32, 4), KernelConfig(16, 32, 4),
                KernelConfig(128, 32, 8))
KMAX = 64  # weights are padded to a multiple of the deepest tl.dot, so every block_k reads only real rows


class FusedLeNet(nn.Module):
    """A LeNet-5 (any variant but `lenet5_wide`) as two Triton kernels; NCHW float input, float32 logits."""

    def __init__(self, model: LeNet, *, dtype: torch.dtype = torch.bfloat16, conv1: KernelConfig | None = None,
                 head: KernelConfig | None = None):
        super().__init__()
        if triton is None:
            raise ZooError("fuse_lenet needs Triton (installed with a CUDA build of torch)")
        cfg = getattr(model, "cfg", None)
        if not isinstance(model, LeNet) or cfg.bn_after_pool or len(cfg.channels) != 2 or len(cfg.fc) != 2:
            raise ZooError(f"fuse_lenet: {getattr(model, 'zoo_name', type(model).__name__)} is not a LeNet-5 "
                           "(two conv blocks with BatchNorm, if any, before the pool, then two hidden fcs)")
        if cfg.channels[0] > C1P or cfg.channels[1] > 16 or max(cfg.fc) > 256 or model.num_classes > 256:
            raise ZooError(f"fuse_lenet: channels {cfg.channels} / fc {cfg.fc} / {model.num_classes} classes "
                           f"exceed what the kernels hold (conv1 <= {C1P}, conv2 <= 16, fc and classes <= 256)")
        if dtype not in (torch.bfloat16, torch.float32):
            raise ZooError(f"fuse_lenet: dtype must be torch.bfloat16 or torch.float32, not {dtype}")
        self.conv1_config, self.head_config = conv1 or CONV1_CONFIGS[0], head or HEAD_CONFIGS[0]
        for kc in (self.conv1_config, self.head_config):
            if kc.block_k not in (16, 32, 64) or kc.block < 16:
                raise ZooError(f"fuse_lenet: {kc}: block_k must be 16, 32 or 64 (a tl.dot depth) and block >= 16")
        self.zoo_meta = getattr(model, "zoo_meta", {})
        self.zoo_name = getattr(model, "zoo_name", "lenet")
        (conv1, bn1), (conv2, bn2) = (_layers(b, nn.Conv2d) for b in model.features)
        (fc1, bnf1), (fc2, bnf2) = (_layers(b, nn.Linear) for b in model.fcs)
        self.in_chans, self.pad = conv1.in_channels, conv1.padding[0]
        self.ks1, self.ks2 = conv1.kernel_size[0], conv2.kernel_size[0]
        self.num_classes, self.fc_in, self.c2 = model.num_classes, fc1.in_features, conv2.out_channels
        self.avg, self.tanh, self.dtype = cfg.pool == "avg", cfg.act == "tanh", dtype
        self.f1p, self.f2p, self.ncp = _pad16(fc1.out_features), _pad16(fc2.out_features), _pad16(self.num_classes)

        def buf(name, t):
            self.register_buffer(name, t.to(dtype if t.dim() > 1 else torch.float32).contiguous(), persistent=False)

        w, b = _fold(conv1, bn1)  # (c1, C, k, k) -> rows c*k*k + ky*k + kx
        buf("w1", _padded(w.reshape(w.shape[0], -1).T, _ceil(w[0].numel(), KMAX), 16)), buf("b1", _padded(b, 16))
        w, b = _fold(conv2, bn2)  # (c2, c1, k, k) -> rows (ky*k + kx)*C1P + c
        w2 = torch.zeros(self.ks2 ** 2, C1P, 16, dtype=torch.float64)
        w2[:, : w.shape[1], : w.shape[0]] = w.permute(2, 3, 1, 0).reshape(self.ks2 ** 2, w.shape[1], w.shape[0])
        buf("w2", _padded(w2.reshape(-1, 16), _ceil(self.ks2 ** 2 * C1P, KMAX), 16)), buf("b2", _padded(b, 16))
        w, b = _fold(fc1, bnf1)  # features c*Q2*Q2 + q -> [q, c, out]
        npos = self.fc_in // self.c2
        wf1 = torch.zeros(npos, 16, self.f1p, dtype=torch.float64)
        wf1[:, : self.c2, : w.shape[0]] = w.T.reshape(self.c2, npos, w.shape[0]).permute(1, 0, 2)
        buf("wf1", wf1), buf("bf1", _padded(b, self.f1p))
        w, b = _fold(fc2, bnf2)
        buf("wf2", _padded(w.T, self.f1p, self.f2p)), buf("bf2", _padded(b, self.f2p))
        w, b = _fold(model.fc, None)
        buf("wf3", _padded(w.T, self.f2p, self.ncp)), buf("bf3", _padded(b, self.ncp))

    def _prepare(self, x: torch.Tensor):
        """The checked input (NCHW contiguous: the taps of one row are adjacent pixels), the pooled sizes, and the
        pooled conv1 map and logits buffers the two kernels write."""
        n, c, h, w = x.shape
        if c != self.in_chans:
            raise ZooError(f"fuse_lenet: expected {self.in_chans} input channels, got {c}")
        q1 = (h + 2 * self.pad - self.ks1 + 1) // 2
        q2 = (q1 - self.ks2 + 1) // 2
        if self.c2 * q2 * q2 != self.fc_in:
            raise ZooError(f"fuse_lenet: a {h}x{w} input gives {self.c2 * q2 * q2} features, fc1 takes {self.fc_in}")
        if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ZooError(f"fuse_lenet runs on a CUDA device (or under TRITON_INTERPRET=1), not {x.device}")
        s1 = torch.empty(n, q1 * q1, C1P, dtype=self.dtype, device=x.device)
        out = torch.empty(n, self.num_classes, dtype=torch.float32, device=x.device)
        return x.contiguous(), q1, q2, s1, out

    def _flags(self, kc: KernelConfig) -> dict:
        f32 = 1 if self.dtype == torch.float32 else 2 if os.environ.get("TRITON_INTERPRET") == "1" else 0
        return dict(AVG=self.avg, TANH=self.tanh, F32=f32, KC=kc.block_k, num_warps=kc.num_warps)

    def _conv1(self, x, s1, q1, kc: KernelConfig) -> None:
        n, c, h, w = x.shape
        _launch(_conv1_pool_kernel, triton.cdiv(n * q1 * q1, kc.block), (x, self.w1, self.b1, s1, n),
                dict(C=c, H=h, W=w, P=self.pad, KS=self.ks1, Q=q1, KP=_ceil(c * self.ks1 ** 2, kc.block_k),
                     BM=kc.block, CP=C1P, **self._flags(kc)))

    def _head(self, s1, out, q1, q2, kc: KernelConfig) -> None:
        n = s1.shape[0]
        _launch(_conv2_head_kernel, triton.cdiv(n, kc.block),
                (s1, self.w2, self.b2, self.wf1, self.bf1, self.wf2, self.bf2, self.wf3, self.bf3, out, n,
                 self.num_classes),
                dict(Q1=q1, KS=self.ks2, Q2=q2, KP=_ceil(self.ks2 ** 2 * C1P, kc.block_k), CP=C1P, F1P=self.f1p,
                     F2P=self.f2p, NCP=self.ncp, BB=kc.block, **self._flags(kc)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, q1, q2, s1, out = self._prepare(x)
        self._conv1(x, s1, q1, self.conv1_config)
        self._head(s1, out, q1, q2, self.head_config)
        return out

    def tune(self, x: torch.Tensor, iters: int = 20) -> dict:
        """Time each kernel's candidate configs on the CUDA batch x (each kernel alone, after a compiling call),
        keep the fastest, and return {kernel: {config: ms}} with the choice first."""
        if x.device.type != "cuda":  # it times with CUDA events; forward() alone also runs in the interpreter
            raise ZooError(f"FusedLeNet.tune times the kernels on a CUDA device; x is on {x.device}")
        x, q1, q2, s1, out = self._prepare(x)
        runs = {"conv1": (CONV1_CONFIGS, lambda kc: self._conv1(x, s1, q1, kc)),
                "head": (HEAD_CONFIGS, lambda kc: self._head(s1, out, q1, q2, kc))}
        times = {}
        for name, (configs, run) in runs.items():
            ms = {}
            for kc in configs:
                run(kc)  # compiles
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(iters):
                    run(kc)
                end.record()
                torch.cuda.synchronize()
                ms[kc] = start.elapsed_time(end) / iters
            best = min(ms, key=ms.get)
            setattr(self, f"{name}_config", best)
            times[name] = {str(k): v for k, v in sorted(ms.items(), key=lambda kv: kv[1])}
            if name == "conv1":
                self._conv1(x, s1, q1, best)  # the head is timed on the chosen conv1's output
        return times


def _launch(kernel, programs: int, args: tuple, meta: dict) -> None:
    """The one place a kernel is launched (tests/test_fused.py records these calls to compile them for sm_90)."""
    kernel[(programs,)](*args, **meta)


def _ceil(n: int, k: int) -> int:
    return -(-n // k) * k


def _padded(t: torch.Tensor, *shape: int) -> torch.Tensor:
    out = torch.zeros(*shape, dtype=t.dtype)
    out[tuple(slice(0, s) for s in t.shape)] = t
    return out


def fuse_lenet(model: LeNet, **kw) -> FusedLeNet:
    """The eval-mode LeNet-5 `model` as a FusedLeNet on the model's device (see the module docstring)."""
    dev = next(model.parameters()).device
    return FusedLeNet(model.eval(), **kw).to(dev)
