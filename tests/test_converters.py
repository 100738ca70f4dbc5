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
VIDEO = yaml.safe_load(open(__file__.replace("tests/test_converters.py", "manifests/sam3-video.yaml")))
CONVERTERS.update({c["op"]: resolve(c["with"]) for c in VIDEO["converters"]})   # the video manifest adds these


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


def test_antialiased_enlarging_is_bilinear_and_shrinking_is_refused():
    grow = Fn(lambda x: (torch.nn.functional.interpolate(x, size=(40, 44), mode="bilinear", antialias=True),))
    run(grow, [torch.randn(2, 1, 32, 32)])
    shrink = Fn(lambda x: (torch.nn.functional.interpolate(x, size=(20, 20), mode="bilinear", antialias=True),))
    with pytest.raises(NotImplementedError, match="only enlarging"):
        run(shrink, [torch.randn(2, 1, 32, 32)])


def test_repeat_by_a_symbolic_count_broadcasts():
    b = torch.export.Dim("b", min=1, max=8)
    table = torch.randn(1, 4, 5)
    run(Fn(lambda x: (table.repeat(x.shape[0], 2, 1) + x,)), [torch.randn(3, 8, 5)], dynamic=({0: b},),
        check_args=[[torch.randn(1, 8, 5)], [torch.randn(6, 8, 5)]])


def test_symbolic_slices_and_reshapes_keep_exact_shapes():
    """The tracker's memory attention keys (rope_attention_real): M frames x tokens, rotated per frame after a
    slice with a symbolic bound, then P pointer tokens. Without slice_inbound a later pass fails on a T.min shape
    (prim.if_then_else), without symbolic_reshape the frontend's identity check raises."""
    from sam3.sam.transformer import RoPEAttention

    from sam3spec.substitutes import rope_attention_real

    torch.manual_seed(0)
    attn = RoPEAttention(embedding_dim=16, num_heads=1, downsample_rate=1, kv_in_dim=8, feat_sizes=[4, 4],
                         rope_k_repeat=True).eval()
    rope_attention_real.prepare(attn)

    def attend(q, mem, ptr):
        kv = torch.cat([mem.flatten(0, 1), ptr]).unsqueeze(0)
        return (rope_attention_real.forward(attn, q, kv, kv, num_k_exclude_rope=ptr.shape[0]),)

    m, p = torch.export.Dim("m", min=1, max=6), torch.export.Dim("p", min=2, max=9)
    args = [torch.randn(1, 16, 16), torch.randn(2, 16, 8), torch.randn(4, 8)]
    run(Fn(attend), args, dynamic=(None, {0: m}, {0: p}),
        check_args=[args, [torch.randn(1, 16, 16), torch.randn(5, 16, 8), torch.randn(9, 8)]])


def test_repeat_interleave_by_a_symbolic_count_broadcasts():
    """The tracker's mask decoder repeats the image position encoding once per object (a symbolic count)."""
    b = torch.export.Dim("b", min=1, max=8)
    table = torch.randn(1, 4, 5)
    run(Fn(lambda x: (torch.repeat_interleave(table, x.shape[0], dim=0) * x,)), [torch.randn(3, 4, 5)],
        dynamic=({0: b},), check_args=[[torch.randn(1, 4, 5)], [torch.randn(7, 4, 5)]])
