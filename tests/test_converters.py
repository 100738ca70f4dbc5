"""Each converter the manifest names, on a small module, through the real frontend, against PyTorch."""

import numpy as np
import pytest
import torch
import tvm
import yaml
from tvm import relax
from tvm.relax.frontend.torch import from_exported_program

from sam3spec.pipelines import cpu as cpu_basic
from sam3spec.runtime.compile import own_constants
from sam3spec.runtime.resolve import resolve

MANIFEST = yaml.safe_load(open(__file__.replace("tests/test_converters.py", "manifests/sam3-image.yaml")))
CONVERTERS = {c["op"]: resolve(c["with"]) for c in MANIFEST["converters"]}


def run(module, args, dynamic=None, check_args=None):
    """Export, import with the manifest's converters, build (unscheduled, no reshape rewrite), run."""
    dynamic = (dynamic,) if dynamic is not None else None  # Fn.forward takes *args
    program = torch.export.export(module, tuple(args), dynamic_shapes=dynamic, strict=False).run_decompositions({})
    mod = from_exported_program(program, run_ep_decomposition=False, custom_convert_map=CONVERTERS)
    mod["main"] = own_constants(mod["main"])
    target = tvm.target.Target({"kind": "llvm"})
    pipeline = cpu_basic.pipeline(target, dynamic_shapes=True, schedule=False)  # the stock lowering
    vm = relax.VirtualMachine(tvm.compile(mod, target=target, relax_pipeline=pipeline), tvm.cpu())
    for case in check_args or [args]:
        got = vm["main"](*[tvm.runtime.tensor(a.numpy()) for a in case])
        with torch.no_grad():
            want = module(*case)
        for g, w in zip(got, want):
            g = g.numpy()
            assert g.shape == tuple(w.shape) and g.dtype == w.numpy().dtype
            np.testing.assert_allclose(g.astype(np.float64), w.numpy().astype(np.float64), rtol=1e-5, atol=1e-5)


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def test_linear_2d():
    lin = torch.nn.Linear(8, 5)
    run(Fn(lambda x: (lin(x),)), [torch.randn(2, 3, 4, 8)])


def test_cat_promotes_int_labels():
    run(Fn(lambda x, y: (torch.cat([x, y], -1),)), [torch.randn(2, 3), torch.randint(0, 3, (2, 1), dtype=torch.int32)])


@pytest.mark.parametrize("op", ["ne", "eq"])
def test_bool_compare(op):
    run(Fn(lambda m: (getattr(m, op)(1),)), [torch.rand(4, 6) > 0.5])


def test_repeat_interleave():
    run(Fn(lambda x: (torch.repeat_interleave(x, 3, dim=0),)), [torch.randn(2, 4, 5)])


def test_sdpa_with_bool_mask_and_symbolic_length():
    """As in SAM's mask decoder: 6 fixed tokens joined to n prompt tokens, so lengths are `n + 6`."""
    n = torch.export.Dim("n", min=2, max=16)
    fixed = torch.randn(1, 2, 6, 8)

    def attend(q, k, mask):
        k = torch.cat([fixed, k], 2)
        mask = torch.cat([torch.ones(1, 1, 5, 6, dtype=torch.bool), mask], 3)
        return (torch.nn.functional.scaled_dot_product_attention(q, k, k * 0.5, attn_mask=mask),)

    def case(length):
        g = torch.Generator().manual_seed(length)
        return [torch.randn(1, 2, 5, 8, generator=g), torch.randn(1, 2, length, 8, generator=g),
                torch.rand(1, 1, 5, length, generator=g) > 0.3]

    run(Fn(attend), case(3), dynamic=(None, {2: n}, {3: n}), check_args=[case(3), case(9)])


def test_like_dtype_and_masked_fill():
    def fn(mask):
        z = torch.zeros_like(mask, dtype=torch.float32).masked_fill(mask, float("-inf"))
        return (z, torch.full_like(mask, 2.5, dtype=torch.float32))

    run(Fn(fn), [torch.rand(3, 7) > 0.5])


def test_rsub_int_literal():
    run(Fn(lambda x: (1 - x,)), [torch.rand(3, 4)])


def test_select_negative_index():
    run(Fn(lambda x: (x[-1] * 2, x[:, -2])), [torch.randn(3, 5, 4)])


def test_grid_sample():
    fn = Fn(lambda x, g: (torch.nn.functional.grid_sample(x, g, align_corners=False),))
    run(fn, [torch.randn(1, 4, 6, 6), torch.rand(1, 5, 1, 2) * 2.4 - 1.2])


def test_scatter_writes_with_dynamic_length():
    n = torch.export.Dim("n", min=3, max=16)

    def fn(x, v):
        x = x.clone()
        x[:, 0] = v[:, 0]
        x[1:] = v[1:] * 2
        x[:, -1] = v[:, 1] + 7
        return (x,)

    run(Fn(fn), [torch.randn(4, 3), torch.randn(4, 3)], dynamic=({0: n}, {0: n}),
        check_args=[[torch.randn(4, 3), torch.randn(4, 3)], [torch.randn(9, 3), torch.randn(9, 3)]])


def test_floor_divide_by_int_literal():
    run(Fn(lambda x: (torch.div(x, 2, rounding_mode="floor"), torch.div(x, 3, rounding_mode="trunc"))),
        [torch.randn(4, 5) * 10])


def test_all_and_unsafe_view():
    run(Fn(lambda m, x: (torch.all(m).reshape(1), (x @ x.transpose(0, 1)).view(-1))),
        [torch.ones(2, 3, dtype=torch.bool), torch.randn(4, 3)])


def test_group_norm_statistics_stay_accurate_on_large_groups():
    """SAM3's pixel decoder normalises 32 channels x 288 x 288 per group: compare with float64 torch."""
    norm = torch.nn.GroupNorm(8, 64)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    x = torch.randn(1, 64, 288, 288) * 3 + 1
    program = torch.export.export(norm, (x,), strict=False).run_decompositions({})
    mod = from_exported_program(program, run_ep_decomposition=False, custom_convert_map=CONVERTERS)
    vm = relax.VirtualMachine(tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x.numpy()))[0].numpy().astype(np.float64)
    with torch.no_grad():
        exact = norm.double()(x.double()).numpy()
    assert np.abs(got - exact).max() < 1e-5
