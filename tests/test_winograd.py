"""Winograd F(2x2, 3x3) on the CPU: which convolutions it takes, and that they still compute PyTorch's result."""

import numpy as np
import pytest
import torch

import tvm
from tvm import relax

from sam3spec.pipelines.cpu import pipeline as cpu_pipeline
from sam3spec.runtime.loader import transform_params

TARGET = {"kind": "llvm", "num-cores": 2}


class _Conv(torch.nn.Module):
    def __init__(self, c, o, stride=1):
        super().__init__()
        self.conv = torch.nn.Conv2d(c, o, 3, stride=stride, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


def _port(module, x, **options):
    from tvm.relax.frontend.torch import from_exported_program

    mod = from_exported_program(torch.export.export(module, (x,)), keep_params_as_input=True)
    mod, params = relax.frontend.detach_params(mod)
    target = tvm.target.Target(TARGET)
    stats = {}
    exe = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target, stats=stats, **options))
    vm = relax.VirtualMachine(exe, tvm.cpu())
    weights = transform_params(vm, [tvm.runtime.tensor(p.numpy()) for p in params["main"]]) or params["main"]
    out = vm["main"](tvm.runtime.tensor(x.numpy()), *weights)
    return out[0].numpy(), stats


@pytest.mark.parametrize("size", [32, 15])  # whole 2x2 tiles, and a ragged last tile row and column
def test_3x3_conv_runs_as_winograd_and_matches_pytorch(size):
    torch.manual_seed(0)
    module, x = _Conv(64, 64).eval(), torch.randn(1, 64, size, size)
    with torch.no_grad():
        expected = module(x).numpy()
    got, stats = _port(module, x, winograd_conv=True)
    assert stats.get("winograd") == 1, stats
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-4)
    direct, stats = _port(module, x)
    assert "winograd" not in stats
    np.testing.assert_allclose(direct, expected, atol=2e-5, rtol=1e-4)


def test_strided_or_narrow_convs_keep_the_direct_schedule():
    torch.manual_seed(0)
    for module, x in ((_Conv(64, 64, stride=2), torch.randn(1, 64, 32, 32)),
                      (_Conv(32, 64), torch.randn(1, 32, 32, 32))):
        got, stats = _port(module.eval(), x, winograd_conv=True)
        assert "winograd" not in stats, stats
        with torch.no_grad():
            np.testing.assert_allclose(got, module(x).numpy(), atol=2e-5, rtol=1e-4)
