"""Numerics of the cpu_basic pipeline (hand-scheduled TIR for llvm) against PyTorch.

Each case: torch.export -> Relax (from_exported_program) -> tvm.compile with
sam3spec.pipelines.cpu.pipeline -> Relax VM, compared to eager PyTorch to
~1e-4 of the output's magnitude. The pipeline's stats must show the intended
rule fired (matmul/conv blocks register-tiled) and no rule raised. No timings.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402
from tvm.relax.frontend.torch import from_exported_program  # noqa: E402

from sam3spec.pipelines import cpu as cpu_basic  # noqa: E402
from sam3spec.runtime.loader import transform_params  # noqa: E402

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 2})


def build(module, args, dynamic_shapes=None, keep_params=False, target=TARGET, **pipeline_kwargs):
    """Compile `module` with cpu_basic; returns (run(*tensors) -> [np.ndarray], stats)."""
    ep = torch.export.export(module.eval(), args, dynamic_shapes=dynamic_shapes)
    mod = from_exported_program(ep, keep_params_as_input=keep_params, run_ep_decomposition=False)
    params = []
    if keep_params:
        mod, detached = relax.frontend.detach_params(mod)
        params = [tvm.runtime.tensor(p.numpy()) for p in detached["main"]]
    stats = {}
    pipe = cpu_basic.pipeline(target, dynamic_shapes=dynamic_shapes is not None, stats=stats,
                              **pipeline_kwargs)
    vm = relax.VirtualMachine(tvm.compile(mod, target=target, relax_pipeline=pipe), tvm.cpu())
    packed = transform_params(vm, params) if keep_params else None  # weights packed once (prepack.py)
    params = params if packed is None else packed

    def run(*tensors):
        out = vm["main"](*[tvm.runtime.tensor(t.numpy()) for t in tensors], *params)
        return [out[i].numpy() for i in range(len(out))]

    return run, stats


def check(module, args, run):
    with torch.no_grad():
        expected = module(*args)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = run(*args)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        e = e.numpy()
        assert g.shape == e.shape
        err = float(np.abs(g.astype(np.float64) - e).max())
        assert err <= 1e-4 * float(np.abs(e).max()) + 1e-6, f"max abs err {err}"


def assert_clean(stats, contractions):
    assert not stats.get("errors"), stats.get("errors")
    assert not stats.get("fallback"), stats.get("fallback")
    assert stats.get("contraction", 0) >= contractions, stats


class MLP(nn.Module):
    def __init__(self, d_in, d_hidden, d_out):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, d_hidden), nn.Linear(d_hidden, d_out)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


@pytest.mark.parametrize("keep_params", [False, True])
def test_linear_gelu_mlp(keep_params):
    torch.manual_seed(0)
    m, x = MLP(64, 256, 64), torch.randn(2, 24, 64)
    run, stats = build(m, (x,), keep_params=keep_params)
    check(m, (x,), run)
    assert_clean(stats, 2)


def test_mlp_ragged_sizes():
    """Prime sizes: the register tiles get tail predicates instead of dividing evenly."""
    torch.manual_seed(1)
    m, x = MLP(37, 53, 19), torch.randn(1, 29, 37)
    run, stats = build(m, (x,))
    check(m, (x,), run)
    assert_clean(stats, 2)


class Attention(nn.Module):
    def __init__(self, sdpa=False):
        super().__init__()
        self.sdpa = sdpa

    def forward(self, q, k, v):
        if self.sdpa:
            return F.scaled_dot_product_attention(q, k, v)
        return torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1) @ v


@pytest.mark.parametrize("sdpa", [False, True])
def test_batched_attention(sdpa):
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 4, 50, 32) for _ in range(3))
    m = Attention(sdpa)
    run, stats = build(m, (q, k, v))
    check(m, (q, k, v), run)
    assert_clean(stats, 2)  # q @ k^T (NT, repacked) and p @ v


class ConvBlock(nn.Module):
    """3x3 conv, 1x1 conv, depthwise 7x7 (groups=C), channels-last LayerNorm, strided patch conv."""

    def __init__(self):
        super().__init__()
        self.c3 = nn.Conv2d(8, 16, 3, padding=1)
        self.c1 = nn.Conv2d(16, 32, 1)
        self.dw = nn.Conv2d(32, 32, 7, padding=3, groups=32)
        self.ln = nn.LayerNorm(32)
        self.patch = nn.Conv2d(32, 24, 4, stride=4)

    def forward(self, x):
        y = self.dw(self.c1(F.relu(self.c3(x))))
        y = self.ln(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.patch(y)


def test_conv_layernorm():
    torch.manual_seed(3)
    m, x = ConvBlock(), torch.randn(1, 8, 20, 20)
    run, stats = build(m, (x,))
    check(m, (x,), run)
    assert_clean(stats, 4)


def test_conv_transpose():
    torch.manual_seed(4)
    m, x = nn.ConvTranspose2d(16, 8, kernel_size=2, stride=2), torch.randn(1, 16, 10, 12)
    run, stats = build(m, (x,))
    check(m, (x,), run)
    assert_clean(stats, 1)


class DynamicBlock(nn.Module):
    """LayerNorm + qkv Linear + attention + output Linear over a dynamic token dim."""

    def __init__(self, dim=32, heads=2):
        super().__init__()
        self.heads = heads
        self.ln, self.qkv, self.out = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(self.ln(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) * (c // self.heads) ** -0.5, dim=-1) @ v
        return self.out(a.transpose(1, 2).reshape(b, n, c)) + x


def test_dynamic_tokens():
    torch.manual_seed(5)
    m = DynamicBlock()
    tokens = torch.export.Dim("tokens", min=2, max=1024)
    run, stats = build(m, (torch.randn(1, 20, 32),), dynamic_shapes=({1: tokens},))
    assert_clean(stats, 3)
    for n in (7, 45):
        x = torch.randn(1, n, 32)
        check(m, (x,), run)


class RemapChain(nn.Module):
    def forward(self, x):
        return x.repeat(2, 1, 3).flip(-1) + x[:, :1].expand(-1, 5, -1).repeat(2, 1, 3)


def test_index_remap_chain():
    """flip after repeat: inlining would compose ``(c - v) % m`` indices, which
    apache-tvm 0.27's FlattenBuffer simplifies wrongly; rule_inline must refuse."""
    m, x = RemapChain(), torch.randn(2, 5, 7)
    run, stats = build(m, (x,))
    check(m, (x,), run)
    assert_clean(stats, 0)


class Activations(nn.Module):
    def forward(self, x):
        return (torch.softmax(x, -1), F.gelu(x), F.gelu(x, approximate="tanh"), torch.sigmoid(x),
                F.silu(x), torch.tanh(x), torch.exp(x.clamp(max=30)))


def test_activations():
    torch.manual_seed(6)
    m, x = Activations(), torch.randn(3, 20, 67) * 3
    run, stats = build(m, (x,))
    check(m, (x,), run)
    assert_clean(stats, 0)


def test_unschedulable_prim_func_is_returned_unchanged():
    """A PrimFunc without schedulable blocks must come back as is, never raise."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def opaque(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (16,), "float32")
        B = T.match_buffer(b, (16,), "float32")
        for i in range(16):
            B[i] = A[i] + T.float32(1)

    stats = {}
    assert cpu_basic.schedule_prim_func(opaque, stats=stats) is opaque
    assert not stats.get("errors")
