"""The CPU speed rules, each on small shapes: scheduled result against the same pipeline unscheduled
(every speed rule off) and against PyTorch, and the rule's own marker in the pipeline stats or module.
Correctness only; timings belong to `python -m sam3spec bench`."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402
from tvm.relax.frontend.torch import from_exported_program  # noqa: E402

from sam3spec.converters.sdpa_matmul import sdpa_matmul  # noqa: E402
from sam3spec.pipelines import cpu as cpu_basic  # noqa: E402
from sam3spec.runtime.compile import tvm_target  # noqa: E402
from sam3spec.runtime.loader import transform_params  # noqa: E402

TARGET = tvm_target({"kind": "llvm", "mcpu": "host", "num-cores": 2})
OFF = dict(schedule=False, prepack_weights=False, fast_math=False, fuse_attention=False, fold_input_free=False,
           patch_conv_as_matmul=False)
SDPA = {"scaled_dot_product_attention.default": sdpa_matmul}


def compile_run(module, args, target=TARGET, **pipeline_kwargs):
    """(outputs as numpy, stats, compiled module's function names)."""
    ep = torch.export.export(module.eval(), args)
    mod = from_exported_program(ep, keep_params_as_input=True, run_ep_decomposition=False, custom_convert_map=SDPA)
    mod, detached = relax.frontend.detach_params(mod)
    stats = {}
    pipe = cpu_basic.pipeline(target, stats=stats, **pipeline_kwargs)
    executable = tvm.compile(mod, target=target, relax_pipeline=pipe)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    weights = [tvm.runtime.tensor(p.numpy()) for p in detached["main"]]
    packed = transform_params(vm, weights)
    names = set() if packed is None else {"main_transform_params"}
    out = vm["main"](*[tvm.runtime.tensor(a.numpy()) for a in args], *(weights if packed is None else packed))
    return [out[i].numpy() for i in range(len(out))], stats, names


def check_against_unscheduled(module, args, atol=2e-5, target=TARGET, **pipeline_kwargs):
    got, stats, names = compile_run(module, args, target, **pipeline_kwargs)
    plain, plain_stats, _ = compile_run(module, args, **OFF)
    with torch.no_grad():
        expected = module(*args)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert not plain_stats.get("contraction") and not plain_stats.get("attention")
    for g, p, e in zip(got, plain, expected):
        scale = max(1.0, float(np.abs(e.numpy()).max()))
        assert np.abs(g - p).max() <= atol * scale, np.abs(g - p).max()
        assert np.abs(g - e.numpy()).max() <= atol * scale, np.abs(g - e.numpy()).max()
    assert not stats.get("errors"), stats.get("errors")
    assert not stats.get("fallback"), stats.get("fallback")
    return stats, names


class MLP(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, h), nn.Linear(h, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


def test_weights_are_packed_once_in_transform_params():
    torch.manual_seed(0)
    stats, names = check_against_unscheduled(MLP(64, 256), (torch.randn(2, 30, 64),))
    assert "main_transform_params" in names and stats.get("packed_weights") == 2
    assert stats.get("contraction", 0) >= 2


def test_packed_panels_with_ragged_rows():
    """Rows not a multiple of the register tile (tail predicate) over packed weight panels."""
    torch.manual_seed(1)
    stats, names = check_against_unscheduled(nn.Linear(128, 192), (torch.randn(37, 128),))
    assert "main_transform_params" in names and stats.get("contraction", 0) >= 1


def test_packed_panels_in_row_blocks():
    """192 rows = 32 six-row tiles: two blocks of 16 row tiles, each passed over by every weight panel."""
    torch.manual_seed(8)
    stats, names = check_against_unscheduled(nn.Linear(96, 64), (torch.randn(192, 96),))
    assert "main_transform_params" in names and stats.get("contraction", 0) >= 1


class SDPA_(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


@pytest.mark.parametrize("nq,nk,d", [(48, 128, 32), (24, 64, 64)])
def test_fused_attention(nq, nk, d):
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 3, n, d) * 2 for n in (nq, nk, nk))
    stats, _ = check_against_unscheduled(SDPA_(), (q, k, v))
    assert stats.get("attention") == 1


class BiasedSDPA(nn.Module):
    def forward(self, q, k, v, bias):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


@pytest.mark.parametrize("nq,bias_shape", [(48, (1, 3, 48, 64)), (30, (1, 3, 30, 64)), (30, (30, 64)), (24, (1, 1, 24, 64))])
def test_fused_attention_with_an_additive_bias_and_ragged_query_rows(nq, bias_shape):
    """SAM3's decoder: 201 queries (not whole blocks of ROWS: padded with zero rows, then sliced off) attend
    over the image with its box relative position bias added to the scores."""
    torch.manual_seed(6)
    q, k, v = (torch.randn(1, 3, n, 32) * 2 for n in (nq, 64, 64))
    bias = torch.randn(bias_shape) * 3
    stats, _ = check_against_unscheduled(BiasedSDPA(), (q, k, v, bias))
    assert stats.get("attention") == 1


def test_register_tiles_fit_the_register_file():
    """AVX-512 (32 zmm): 6 x 64 accumulators in 24 registers; AVX2 (16 ymm): 6 x 16 in 12 (6 x 64 would need 48)."""
    avx512 = cpu_basic.TileConfig.for_target(tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"}))
    avx2 = cpu_basic.TileConfig.for_target(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}))
    assert (avx512.row_tile, avx512.col_tile) == (6, 64)
    assert (avx2.row_tile, avx2.col_tile) == (6, 16)


def test_narrow_tiles_take_more_rows():
    """A 288-wide convolution row splits into 32-column tiles: 12 rows keep AVX-512's 24 accumulators."""
    avx512 = cpu_basic.TileConfig.for_target(tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"}))
    avx2 = cpu_basic.TileConfig.for_target(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}))
    assert [avx512.rows_for(cols) for cols in (64, 32, 16, 8)] == [6, 12, 12, 12]
    assert [avx2.rows_for(cols) for cols in (16, 8, 4)] == [6, 12, 12]


def test_conv_with_a_narrow_tile_and_more_rows():
    """32 output columns and 20 channels: 10 channel rows x 32 columns on AVX-512 (its column tile is 64), 5 x 16 on AVX2."""
    torch.manual_seed(9)
    conv = nn.Conv2d(8, 20, kernel_size=3, padding=1, bias=True)
    stats, _ = check_against_unscheduled(conv, (torch.randn(1, 8, 6, 32),))
    assert stats.get("contraction", 0) >= 1


class ScoresOverPrompt(nn.Module):
    """Fusion's text cross-attention scores: image queries against a symbolic number of prompt tokens."""

    def forward(self, q, kt, mask):
        return (q @ kt) * 0.25 + mask


def test_contraction_with_symbolic_rows_takes_them_one_at_a_time():
    """The symbolic prompt axis is no register-row axis (a bounds check per row); correct at two lengths."""
    torch.manual_seed(10)
    q, kt, mask = torch.randn(1, 2, 128, 32), torch.randn(1, 2, 32, 19), torch.randn(1, 2, 1, 19)
    n = torch.export.Dim("n", min=2, max=64)
    ep = torch.export.export(ScoresOverPrompt(), (q, kt, mask), dynamic_shapes=({}, {3: n}, {3: n}))
    stats = {}
    mod = from_exported_program(ep, run_ep_decomposition=False)
    scheduled = cpu_basic.pipeline(TARGET)(mod)
    matmuls = [f.script() for gv, f in scheduled.functions_items() if "matmul" in gv.name_hint]
    assert matmuls and not any("T.where" in text for text in matmuls)  # no bounds check per register row
    executable = tvm.compile(mod, target=TARGET, relax_pipeline=cpu_basic.pipeline(TARGET, stats=stats))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    assert stats.get("contraction", 0) >= 1 and not stats.get("fallback") and not stats.get("errors")
    for length in (19, 5):
        args = (q, kt[..., :length].contiguous(), mask[..., :length].contiguous())
        got = vm["main"](*[tvm.runtime.tensor(a.numpy()) for a in args])
        got = got if hasattr(got, "numpy") else got[0]
        np.testing.assert_allclose(got.numpy(), ScoresOverPrompt()(*args).numpy(), atol=2e-5, rtol=1e-5)


@pytest.mark.skipif(not tvm.target.codegen.target_has_features("avx2", TARGET), reason="needs an AVX2 host")
def test_fused_attention_with_avx2_tiles_wider_values_than_the_tile():
    """With AVX2's 16-column tile the product with V (32 features) is two column tiles per row tile."""
    torch.manual_seed(7)
    q, k, v = (torch.randn(1, 2, n, 32) * 2 for n in (48, 64, 64))
    haswell = tvm_target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})
    stats, _ = check_against_unscheduled(SDPA_(), (q, k, v), target=haswell)
    assert stats.get("attention") == 1


def test_attention_shapes_it_cannot_tile_keep_the_generic_rules():
    torch.manual_seed(3)
    q, k, v = (torch.randn(1, 2, n, 16) for n in (10, 50, 50))  # 10 % ROWS and 50 % COLS are not 0
    stats, _ = check_against_unscheduled(SDPA_(), (q, k, v))
    assert "attention" not in stats


def test_attention_with_extreme_scores_matches_softmax():
    """Scores far apart: the row max keeps exp() finite; fast_exp clamps at +-88."""
    q = torch.zeros(1, 1, 24, 16)
    q[..., 0] = 40.0
    k = torch.randn(1, 1, 64, 16)
    v = torch.randn(1, 1, 64, 16)
    stats, _ = check_against_unscheduled(SDPA_(), (q, k, v), atol=1e-5)
    assert stats.get("attention") == 1


def test_patch_conv_as_matmul():
    torch.manual_seed(4)
    conv = nn.Conv2d(3, 32, kernel_size=4, stride=4, bias=True)
    stats, _ = check_against_unscheduled(conv, (torch.randn(1, 3, 16, 20),))
    assert stats.get("contraction", 0) >= 1


@pytest.mark.parametrize("size", [(13, 18), (16, 16)])
def test_strided_conv_with_padding_as_matmul(size):
    """The tracker's mask downsampler: 3x3, stride 2, padding 1, 64 output channels (odd and even sides, so that
    windows reach into the padding on one side or both)."""
    torch.manual_seed(5)
    conv = nn.Conv2d(8, 64, kernel_size=3, stride=2, padding=1, bias=True)
    x = torch.randn(2, 8, *size)
    stats, _ = check_against_unscheduled(conv, (x,))
    assert stats.get("contraction", 0) >= 1
    assert "patch" in legalized_names(conv, x)


def legalized_names(module, x) -> str:
    mod = from_exported_program(torch.export.export(module.eval(), (x,)), run_ep_decomposition=False)
    return " ".join(gv.name_hint for gv, _ in cpu_basic.pipeline(TARGET, stop_before_schedule=True)(mod).functions_items())


def test_strided_conv_with_few_channels_keeps_the_stock_legalization():
    conv = nn.Conv2d(1, 4, kernel_size=3, stride=2, padding=1)
    assert "patch" not in legalized_names(conv, torch.randn(1, 1, 16, 16))


class Nonlinear(nn.Module):
    def forward(self, x):
        return F.gelu(x), torch.softmax(x, -1)


def test_fast_exp_and_erf_stay_within_1e6():
    x = torch.linspace(-30, 30, 64 * 48).reshape(64, 48)
    x[0, :8] = torch.tensor([-1e4, -100.0, -88.0, -1e-3, 1e-3, 88.0, 100.0, 1e4])
    got, _, _ = compile_run(Nonlinear(), (x,))
    for g, e in zip(got, Nonlinear()(x)):
        assert np.isfinite(g).all()
        assert np.abs(g - e.numpy()).max() <= 1e-6 * max(1.0, float(e.abs().max()))


def test_host_cpu_is_resolved_for_llvm():
    target = tvm_target({"kind": "llvm", "mcpu": "host"})
    assert target.attrs["mcpu"] == str(tvm.target.codegen.llvm_get_system_cpu())
    assert "host" not in str(target)


def test_thread_pool_sized_like_torch():
    """Left alone TVM halves the logical CPUs on x86; configure() gives it torch's thread count."""
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    code = "from sam3spec.runtime import threads; import torch; print(threads.configure(), torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    tvm_threads, torch_threads = out.stdout.split()
    assert tvm_threads == torch_threads



class TwoAttentions(nn.Module):
    def forward(self, q, k, v):
        first = F.scaled_dot_product_attention(q, k, v)
        return F.scaled_dot_product_attention(first, k, v) + first


def test_attentions_of_one_shape_share_one_kernel():
    torch.manual_seed(5)
    q, k, v = (torch.randn(1, 2, n, 16) for n in (24, 64, 64))
    stats, _ = check_against_unscheduled(TwoAttentions(), (q, k, v))
    assert stats.get("attention") == 1  # one scheduled kernel, called twice


@pytest.mark.parametrize("out_channels", [24, 64])
def test_conv_covering_the_whole_input_as_matmul(out_channels):
    """The geometry encoder's 7x7 pooling conv over a 7x7 ROI (stride 1, one output): with 64 output
    channels a pre-packed weight matmul (prepack), with 24 the patch-conv legalization."""
    torch.manual_seed(6)
    conv = nn.Conv2d(16, out_channels, kernel_size=7, stride=1, bias=True)
    stats, names = check_against_unscheduled(conv, (torch.randn(3, 16, 7, 7),))
    assert stats.get("contraction", 0) >= 1
    assert ("packed_weights" in stats) == (out_channels % 64 == 0)


class SlicedWeights(nn.Module):
    """nn.MultiheadAttention's in_proj: one parameter, sliced into the q, k and v projections."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(192, 64) * 0.1)

    def forward(self, x):
        return F.linear(x, self.w[:64]) + F.linear(x, self.w[64:128]) * F.linear(x, self.w[128:])


def test_slices_of_a_weight_are_packed_once():
    torch.manual_seed(7)
    stats, names = check_against_unscheduled(SlicedWeights(), (torch.randn(40, 64),))
    assert stats.get("packed_weights") == 3 and "main_transform_params" in names


class _HeadsLast(nn.Module):
    """[tokens, heads * dim] -> [1, heads, dim, tokens]: attention's K^T, a reshape fused into a transpose."""

    def forward(self, x):
        return x.reshape(96, 2, 32).permute(1, 2, 0).reshape(1, 2, 32, 96) * 2.0


def test_a_reshape_fused_into_a_transpose_is_tiled():
    """The read's last index is (h * 32 + d) % 64 after the reshapes are inlined: contiguous along d once the
    iters' bounds simplify it, so the transpose rule tiles d x tokens (a 5184-token one ran 10x faster)."""
    from sam3spec.pipelines.cpu.schedule import schedule_prim_func

    x = torch.randn(96, 64)
    check_against_unscheduled(_HeadsLast(), (x,))
    staged = cpu_basic.pipeline(TARGET, stop_before_schedule=True)(
        from_exported_program(torch.export.export(_HeadsLast(), (x,))))
    (func,) = [f for f in staged.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    loops = [line.strip() for line in schedule_prim_func(func, target=TARGET).script().splitlines()
             if line.strip().startswith("for ")]
    assert len(loops) == 3 and "T.parallel" in loops[0] and "T.vectorized" in loops[2], loops
    assert "ax2_1" in loops[1], loops  # d's tile inside the parallel loop, the tokens' tile vectorised in it


class _ShortSoftmax(nn.Module):
    def forward(self, x):
        return torch.softmax(x * 2.0, dim=-1)


def test_a_softmax_over_a_few_keys_runs_a_row_per_iteration():
    """Rows shorter than a vector (10 keys, as the SAM mask decoder's image -> token attention) get one parallel
    loop of rows and plain inner loops, not dlight's masked 16-lane vectors."""
    from sam3spec.pipelines.cpu.row_reduction import rule_row_reductions

    x = torch.randn(2, 8, 300, 10) * 4
    stats, _ = check_against_unscheduled(_ShortSoftmax(), (x,), fast_math=True)
    assert stats.get("row_reduction"), stats
    staged = cpu_basic.pipeline(TARGET, stop_before_schedule=True)(
        from_exported_program(torch.export.export(_ShortSoftmax(), (x,))))
    (func,) = [f for n, f in staged.functions.items() if "softmax" in n.name_hint]
    text = rule_row_reductions(func, TARGET).mod.script()
    assert "T.parallel(T.int64(4800))" in text and "T.vectorized" not in text, text


@pytest.mark.parametrize("shape", [(300, 256), (2, 8, 4096)], ids=["layer_norm", "group_norm_like"])
def test_long_rows_are_summed_in_vector_partials(shape):
    """A row of at least four vectors is summed into a vector of partial sums (rfactor, `_rf` blocks), not in one
    scalar chain; results as the unscheduled pipeline's and PyTorch's."""
    from sam3spec.pipelines.cpu.row_reduction import rule_row_reductions

    class Norm(nn.Module):
        def forward(self, x):
            centred = x - x.mean(-1, keepdim=True)
            return centred * torch.rsqrt((centred * centred).mean(-1, keepdim=True) + 1e-5)

    x = torch.randn(*shape) * 3 + 1
    stats, _ = check_against_unscheduled(Norm(), (x,))
    assert stats.get("row_reduction"), stats
    staged = cpu_basic.pipeline(TARGET, stop_before_schedule=True)(from_exported_program(torch.export.export(Norm(), (x,))))
    funcs = [f for f in staged.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    scheduled = [rule_row_reductions(f, TARGET) for f in funcs]
    assert any(s is not None and "_rf" in s.mod.script() for s in scheduled)


class _UpConv(nn.Module):
    """SAM's 2x2 stride-2 up-convolution with a GELU: depth-to-space and the GELU end up in the write-back."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(16, 32, 2, stride=2)

    def forward(self, x):
        return F.gelu(self.up(x))


def test_a_permuting_write_back_stores_along_the_output_rows():
    """The write-back's innermost loop walks the output's last axis (x), not the channels: stored along the
    channels, one vector spans 32 output planes (the mask decoder's up-convolution: 7.4 -> 4.0 ms)."""
    from sam3spec.pipelines.cpu.config import TileConfig
    from sam3spec.pipelines.cpu.schedule import schedule_prim_func

    torch.manual_seed(0)
    x = torch.randn(1, 16, 24, 24)
    stats, _ = check_against_unscheduled(_UpConv(), (x,), conv_transpose_as_matmul=True)
    assert stats.get("contraction"), stats
    staged = cpu_basic.pipeline(TARGET, stop_before_schedule=True)(from_exported_program(torch.export.export(_UpConv(), (x,))))
    (func,) = [f for n, f in staged.functions.items() if "conv2d_transpose" in n.name_hint]
    lines = [line.strip() for line in schedule_prim_func(func, target=TARGET, cfg=TileConfig.for_target(TARGET)).script().splitlines()]
    at = lines.index('with T.sblock("conv2d_transpose_planes_local"):')
    assert lines[at - 1].startswith("for ax4 in T.vectorized"), lines[at - 3:at + 1]


class _GridEncoding(nn.Module):
    """SAM's dense positional encoding: a fixed grid through a fixed random matrix, sin and cos, on every call."""

    def __init__(self):
        super().__init__()
        self.register_buffer("gaussian", torch.randn(2, 16))

    def forward(self, x, n):
        ones = torch.ones(12, 12)
        grid = torch.stack([ones.cumsum(1) - 0.5, ones.cumsum(0) - 0.5], dim=-1) / 12 * 2 - 1
        coords = 2 * torch.pi * grid @ self.gaussian
        count = n + torch.arange(4).sum()  # an int64 value: its constant must stay int64 (relax.const makes int32)
        return x + torch.cat([coords.sin(), coords.cos()], dim=-1).permute(2, 0, 1), count


def test_input_free_values_are_computed_at_compile_time():
    from sam3spec.pipelines import input_free

    x, n = torch.randn(32, 12, 12), torch.tensor([5])
    check_against_unscheduled(_GridEncoding(), (x, n))
    mod = from_exported_program(torch.export.export(_GridEncoding(), (x, n)))
    folded = input_free.fold()(mod)["main"].script()
    assert "R.sin" in mod["main"].script() and "R.sin" not in folded and "R.cumsum" not in folded, folded


class _Conv3x3(torch.nn.Module):
    def __init__(self, c, o, stride=1):
        super().__init__()
        self.conv = torch.nn.Conv2d(c, o, 3, stride=stride, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


@pytest.mark.parametrize("size", [32, 15])  # whole 2x2 tiles, and a ragged last tile row and column
def test_3x3_conv_runs_as_winograd_and_matches_pytorch(size):
    torch.manual_seed(0)
    module, x = _Conv3x3(64, 64).eval(), torch.randn(1, 64, size, size)
    with torch.no_grad():
        expected = module(x).numpy()
    (got,), stats, _ = compile_run(module, (x,), winograd_conv=True)
    assert stats.get("winograd") == 1, stats
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-4)
    (direct,), stats, _ = compile_run(module, (x,))
    assert "winograd" not in stats
    np.testing.assert_allclose(direct, expected, atol=2e-5, rtol=1e-4)


def test_strided_or_narrow_convs_keep_the_direct_schedule():
    torch.manual_seed(0)
    for module, x in ((_Conv3x3(64, 64, stride=2), torch.randn(1, 64, 32, 32)),
                      (_Conv3x3(32, 64), torch.randn(1, 32, 32, 32))):
        (got,), stats, _ = compile_run(module.eval(), (x,), winograd_conv=True)
        assert "winograd" not in stats, stats
        with torch.no_grad():
            np.testing.assert_allclose(got, module(x).numpy(), atol=2e-5, rtol=1e-4)


class RowsTimesActivation(nn.Module):
    """A symbolic number of rows (prompt tokens) times an activation (not a weight), + bias, ReLU."""

    def forward(self, x, y, b):
        return torch.relu(x @ y + b)


def _dynamic_rows(module, args, n_max=32):
    n = torch.export.Dim("n", min=1, max=n_max)
    ep = torch.export.export(module, args, dynamic_shapes=({0: n}, {}, {}))
    return from_exported_program(ep, run_ep_decomposition=False)


def test_symbolic_rows_are_padded_to_whole_register_tiles():
    """The rows go in zero-padded register tiles; only the real rows are stored (checked at lengths that leave
    1, 5 and 0 rows in the last tile, against PyTorch)."""
    torch.manual_seed(12)
    x, y, b = torch.randn(13, 64), torch.randn(64, 128), torch.randn(128)
    mod = _dynamic_rows(RowsTimesActivation(), (x, y, b))
    scheduled = cpu_basic.pipeline(TARGET)(mod)
    (text,) = [f.script() for gv, f in scheduled.functions_items() if "matmul" in gv.name_hint]
    assert "x_pad" in text and "T.unroll(T.int64(6))" in text, text  # padded rows, 6-row register tiles
    assert "T.where" in text and " < s" in text  # the write-back stores the real rows only (s: the row count)
    vm = relax.VirtualMachine(tvm.compile(mod, target=TARGET, relax_pipeline=cpu_basic.pipeline(TARGET)), tvm.cpu())
    for rows in (13, 5, 12):
        args = (torch.randn(rows, 64), y, b)
        got = vm["main"](*[tvm.runtime.tensor(a.numpy()) for a in args])
        got = got if hasattr(got, "numpy") else got[0]
        np.testing.assert_allclose(got.numpy(), RowsTimesActivation()(*args).numpy(), atol=2e-5, rtol=1e-5)


def test_symbolic_rows_over_weight_panels_are_padded_too():
    """A prompt MLP (symbolic rows, prepacked weights): the panels are an axis of the product, so its rows are
    padded as above instead of going one at a time (38 x 256 x 2048 here: 123 -> 391 GFLOP/s); against PyTorch."""
    torch.manual_seed(13)
    module = MLP(64, 128).eval()
    n = torch.export.Dim("n", min=1, max=32)
    ep = torch.export.export(module, (torch.randn(13, 64),), dynamic_shapes=({0: n},))
    mod, detached = relax.frontend.detach_params(from_exported_program(ep, keep_params_as_input=True,
                                                                       run_ep_decomposition=False))
    stats = {}
    scheduled = cpu_basic.pipeline(TARGET, stats=stats)(mod)
    texts = [f.script() for gv, f in scheduled.functions_items() if "matmul_packed" in gv.name_hint]
    assert stats.get("packed_weights") == 2 and len(texts) == 2, (stats, len(texts))
    for text in texts:
        assert "_pad = T.sblock_alloc_buffer" in text and "T.unroll(T.int64(6))" in text, text
    vm = relax.VirtualMachine(tvm.compile(mod, target=TARGET, relax_pipeline=cpu_basic.pipeline(TARGET)), tvm.cpu())
    weights = transform_params(vm, [tvm.runtime.tensor(p.numpy()) for p in detached["main"]])
    for rows in (13, 5, 12):
        x = torch.randn(rows, 64)
        got = vm["main"](tvm.runtime.tensor(x.numpy()), *weights)
        got = got if hasattr(got, "numpy") else got[0]
        with torch.no_grad():
            np.testing.assert_allclose(got.numpy(), module(x).numpy(), atol=2e-5, rtol=1e-5)


def test_kernels_keep_noalias_beside_a_shape_function(monkeypatch):
    """A module with symbolic shapes carries VMShapeLower's shape_func; the kernels' pointers stay noalias."""
    from sam3spec.pipelines import host_noalias

    x, y, b = torch.randn(13, 64), torch.randn(64, 128), torch.randn(128)
    mod = _dynamic_rows(RowsTimesActivation(), (x, y, b))

    def llvm_ir() -> str:
        executable = tvm.compile(mod, target=TARGET, relax_pipeline=cpu_basic.pipeline(TARGET))
        return "\n".join(m.inspect_source("ll") for m in [executable.mod, *executable.mod.imports]
                         if m.kind == "llvm")

    assert "noalias" in llvm_ir()
    # the pass's reason: without it the same module's LLVM IR has no noalias at all
    monkeypatch.setattr(host_noalias, "mark", tvm.transform.module_pass(lambda m, _c: m, opt_level=0))
    assert "noalias" not in llvm_ir()
