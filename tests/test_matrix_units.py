"""Matrix units and reduced precision: simdgroup matmuls with float32 accumulators for Metal (and their CUDA proxy),
the kernel counts and the static Metal limits check that compile.json records, and the autocast rule a float16
target is verified under."""

import re

import numpy as np
import pytest
import torch
import tvm
from tvm import te, tirx

from sam3spec.pipelines.simdgroup import SimdgroupMatmul
from sam3spec.runtime import kernels
from sam3spec.runtime.export import autocast_outputs
from sam3spec.runtime.verify import autocast_rule, compare

METAL = {"kind": "metal", "host": {"kind": "llvm", "mtriple": "arm64-apple-macos"}}
CUDA = {"kind": "cuda", "arch": "sm_90"}
NO_STORAGE_REWRITE = {"tirx.disable_storage_rewrite": True}   # as the manifests' metal-fp16 pass_config


def _matmul(out_dtype="float32", m=200, n=256, k=320):
    a = te.placeholder((m, k), "float16", name="a")
    b = te.placeholder((n, k), "float16", name="b")
    r = te.reduce_axis((0, k), name="r")
    c = te.compute((m, n), lambda i, j: te.sum(a[i, r].astype(out_dtype) * b[j, r].astype(out_dtype), axis=r))
    return te.create_prim_func([a, b, c])


def _source(func, proxy: bool, build_for: dict) -> str:
    sch = SimdgroupMatmul(proxy=proxy).apply(func, tvm.target.Target(METAL), False)
    assert sch is not None
    mod = tvm.IRModule({"main": sch.mod["main"].with_attr("tirx.is_scheduled", True)})
    with tvm.transform.PassContext(config=NO_STORAGE_REWRITE):
        return tvm.compile(mod, target=tvm.target.Target(build_for)).mod.imports[0].inspect_source()


def test_simdgroup_matmul_accumulates_half_operands_in_float_on_metal():
    source = _source(_matmul(), proxy=False, build_for=METAL)
    assert "simdgroup_float8x8" in source and "simdgroup_half8x8" in source
    assert kernels.count("metal", source) == {"kernels": 1, "matrix_unit": 1,
                                              "instruction": "simdgroup_multiply_accumulate"}
    check = kernels.metal_check(source, {"main": 128})   # 4 simdgroups of 32 (threadIdx.z x threadIdx.x)
    assert check["ok"], check["problems"]
    assert 0 < check["largest"]["threadgroup_bytes"] <= kernels.METAL_LIMITS["threadgroup_bytes"]


def test_simdgroup_proxy_builds_for_cuda_without_metal_builtins():
    source = _source(_matmul(), proxy=True, build_for=CUDA)
    assert "__global__" in source and "simdgroup" not in source
    assert kernels.count("cuda", source)["matrix_unit"] == 0


def test_simdgroup_rule_declines_what_it_does_not_cover():
    rule = SimdgroupMatmul()
    assert rule.apply(_matmul(out_dtype="float16"), tvm.target.Target(METAL), False) is None   # TVM's own rule
    assert rule.apply(_matmul(), tvm.target.Target(CUDA), False) is None                          # not Metal


def test_metal_check_names_each_limit_it_finds_broken():
    args = ",\n".join(f"  device float* p{i} [[ buffer({i}) ]]" for i in range(32))
    source = (f"kernel void big_kernel({args},\n  uint threadIdx [[thread_position_in_threadgroup]]\n) {{\n"
              "  threadgroup float tile[9000];\n  double x = 0;\n}\n")
    check = kernels.metal_check(source, {"big": 2048})
    assert not check["ok"]
    assert check["largest"] == {"buffers": 32, "threadgroup_bytes": 36000, "threads": 2048}
    assert len(check["problems"]) == 4   # double, and the three limits
    unknown = kernels.metal_check(source.replace("double x = 0;", ""), {})
    assert any("threads per threadgroup unknown" in p for p in unknown["problems"])


def _runs(errors, tol=1e-4):
    expected = np.zeros(8)
    return [compare(expected + e, expected, tol, 0.0) for e in errors]


def test_autocast_rule_holds_float16_to_twice_pytorchs_own_error():
    autocast = _runs([1e-3, 2e-3])                 # PyTorch autocast's worst: 2e-3
    assert autocast_rule(_runs([3.9e-3]), autocast, 2.0)["ok"]
    verdict = autocast_rule(_runs([4.1e-3]), autocast, 2.0)
    assert not verdict["ok"] and verdict["autocast_max_abs"] == pytest.approx(2e-3) and verdict["bound"] == pytest.approx(4e-3)
    exact = _runs([0.0])                           # an output autocast leaves in float32
    assert autocast_rule(_runs([5e-5]), exact, 2.0)["ok"]        # within the fp32 tolerance
    assert not autocast_rule(_runs([5e-3]), exact, 2.0)["ok"]
    assert not autocast_rule(_runs([float("nan")]), autocast, 2.0)["ok"]


def test_autocast_outputs_are_pytorchs_float16_numbers_in_float32():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 8)).eval()
    x = torch.randn(64, 256)
    (got,), = autocast_outputs(module, [(x,)], "float16")
    with torch.no_grad():
        exact = module(x)
    assert got.dtype == torch.float32
    err = (got - exact).abs().max().item()
    assert 1e-5 < err < 1e-1   # float16 operands: not exact, not wrong


def _batched(b, m, n, k, dtype="float16", w_layout="nk"):
    a = te.placeholder((b, m, k), dtype, name="a")
    w = te.placeholder((b, n, k) if w_layout == "nk" else (b, k, n), dtype, name="w")
    r = te.reduce_axis((0, k), name="r")
    at = (lambda s, j, r: w[s, j, r]) if w_layout == "nk" else (lambda s, j, r: w[s, r, j])
    c = te.compute((b, m, n), lambda s, i, j: te.sum(a[s, i, r].astype("float32") * at(s, j, r).astype("float32"),
                                                     axis=r))
    return te.create_prim_func([a, w, c])


@pytest.mark.parametrize("shape,w_layout,b_major", [
    ((16, 576, 576, 64), "nk", "col_major"), ((16, 576, 64, 576), "kn", "row_major"),
    ((8, 200, 5184, 32), "nk", "col_major"), ((1, 256, 512, 256), "kn", "row_major")],
    ids=["scores", "p_v", "fusion_k32", "lifted_linear"])
def test_matmuls_get_tensor_cores_and_coalesced_loads(shape, w_layout, b_major):
    """Every float16 matmul gets wmma, attention's small dims included. A right operand laid out K x N (a
    lifted linear weight, attention's V) is read along N, whole float16x4 vectors, and kept K x N in shared
    memory (wmma row_major), not gathered one element per row of K (dlight's MatmulTensorization)."""
    from sam3spec.pipelines.tensor_core import TensorCoreMatmul

    cuda = tvm.target.Target(CUDA)
    sch = TensorCoreMatmul().apply(_batched(*shape, w_layout=w_layout), cuda, False)
    assert sch is not None
    lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("tirx.is_scheduled", True)}), target=cuda)
    source = lib.mod.imports[0].inspect_source()
    assert kernels.count("cuda", source)["matrix_unit"] == 1
    assert f"matrix_b, 16, 16, 16, half, nvcuda::wmma::{b_major}" in source
    assert re.search(r"= \*\(half4\*\)\(w_ptr \+", source), "w is not read as float16x4 vectors"
    assert "w_ptr[v_" not in source   # no element-wise gather of w


@pytest.mark.parametrize("shape,dtype", [((1, 576, 576, 16), "float16"), ((16, 576, 576, 64), "float32")],
                         ids=["too_small", "fp32"])
def test_tensor_core_matmul_leaves_the_rest_to_dlight(shape, dtype):
    from sam3spec.pipelines.tensor_core import TensorCoreMatmul

    assert TensorCoreMatmul().apply(_batched(*shape, dtype=dtype), tvm.target.Target(CUDA), False) is None


def test_tensor_core_tile_is_checked_and_chosen_by_shape():
    from sam3spec.pipelines.tensor_core import NARROW, WIDE, WIDE_ASYNC, Tile, choose_tile

    with pytest.raises(ValueError, match="multiples of 16"):
        Tile((24, 32), (2, 2), 32)
    assert Tile((32, 32), (4, 4), 64).block == (128, 128)
    assert choose_tile([tirx.IntImm("int32", 5184), tirx.IntImm("int32", 3072), tirx.IntImm("int32", 1024)]) == WIDE
    assert choose_tile([tirx.IntImm("int32", 576), tirx.IntImm("int32", 64), tirx.IntImm("int32", 576)]) == NARROW
    assert choose_tile([tirx.Var("n", "int64"), tirx.IntImm("int32", 256), tirx.IntImm("int32", 32)]) == NARROW
    big = [tirx.IntImm("int32", 5184), tirx.IntImm("int32", 4736), tirx.IntImm("int32", 1024)]
    assert choose_tile(big, async_copy=True) == WIDE_ASYNC and WIDE_ASYNC.stages == 4
    assert choose_tile(big[:1] + [tirx.IntImm("int32", 64)] * 2, async_copy=True) == NARROW


def test_cp_async_tile_only_for_plain_aligned_operands():
    """cp.async copies 16 bytes: a linear's operands qualify; a convolution's gather (the trunk's patch embedding:
    misaligned address on an H100) and a K of 588 (3 x 14 x 14) do not, and get the register-staged tile."""
    from tvm import topi

    from sam3spec.pipelines.tensor_core import WIDE, WIDE_ASYNC, TensorCoreMatmul, async_copy_safe

    linear = _batched(1, 5184, 1024, 1024)
    assert async_copy_safe(linear) and not async_copy_safe(_batched(1, 5184, 1024, 588))
    data = te.placeholder((1, 64, 72, 72), "float16", name="data")
    kernel = te.placeholder((256, 64, 3, 3), "float16", name="kernel")
    conv = topi.nn.conv2d_nchw(data, kernel, 1, 1, 1, out_dtype="float32")
    assert not async_copy_safe(te.create_prim_func([data, kernel, conv]))
    target = tvm.target.Target(CUDA)
    for func, tile in ((linear, WIDE_ASYNC), (_batched(1, 5184, 1024, 588), WIDE)):
        with tvm.transform.PassContext(config={"tirx.use_async_copy": True}):
            sch = TensorCoreMatmul().apply(func, target, False)
        assert ("software_pipeline_async_stages" in sch.mod.script()) == bool(tile.stages), tile


def test_cpu_build_hides_the_gpu_from_constructors_only():
    from sam3spec.runtime.export import cpu_build

    seen = torch.cuda.is_available
    with cpu_build():
        assert torch.cuda.is_available() is False
    assert torch.cuda.is_available is seen


def test_autocast_moves_and_restores_tensors_kept_as_plain_attributes():
    """SAM3's decoder keeps its coordinate cache as a tuple attribute, which Module.to leaves where it is."""

    class Cached(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 8)
            self.cache = (torch.ones(8), torch.zeros(8))

        def forward(self, x):
            return self.lin(x) + self.cache[0]

    module = Cached().eval()
    cache = module.cache
    (got,), = autocast_outputs(module, [(torch.randn(2, 8),)], "bfloat16")
    assert got.dtype == torch.float32 and module.cache is cache


@pytest.mark.parametrize("shape,dtype,vthreads", [((1, 1024, 256, 256), "float32", True),
                                                  ((16, 1024, 64, 576), "float32", False),
                                                  ((1, 32, 256, 256), "float32", False),
                                                  ((144, 576, 576, 64), "float32", True),
                                                  ((1, 1024, 256, 48), "float16", False)],
                         ids=["fp32_linear", "fp32_p_v", "fp32_short", "fp32_windowed_scores", "fp16"])
def test_simt_matmul_takes_virtual_threads_for_long_float32_only(shape, dtype, vthreads):
    """float32 matmuls with batch x M >= 1024 and N > 64 on CUDA get two virtual threads per axis (8 x 8 per
    thread; windowed attention's scores too); attention's P.V (N = 64), a short sequence (M = 32) and other dtypes
    keep dlight's config."""
    from sam3spec.pipelines.simt_matmul import SimtMatmul

    cuda = tvm.target.Target(CUDA)
    with cuda:
        sch = SimtMatmul().apply(_batched(*shape, dtype=dtype), cuda, False)
    assert sch is not None
    assert ('T.thread_binding(2, thread="vthread.x")' in sch.mod.script()) == vthreads


def test_tile_stages_copy_operands_with_cp_async():
    """Tile.stages >= 2: A and B go global -> shared with cp.async, that many tiles in flight (the 4-stage 64 x 64
    warp tile ran the trunk's linears 16% faster on an H100, not yet the rule's tile); stages 0 keeps the
    register-staged double buffer."""
    from sam3spec.pipelines.tensor_core import TensorCoreMatmul, Tile

    cuda = tvm.target.Target(CUDA)
    sources = {}
    for stages in (0, 4):
        sch = TensorCoreMatmul._schedule(_batched(1, 256, 512, 256, w_layout="kn"), "float32",
                                         Tile((64, 64), (2, 2), 32, stages))
        with tvm.transform.PassContext(config={"tirx.use_async_copy": bool(stages)}):
            lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("tirx.is_scheduled", True)}),
                              target=cuda)
        sources[stages] = lib.mod.imports[0].inspect_source()
    assert "cp.async" not in sources[0]
    assert "cp.async.cg.shared.global" in sources[4] and "cp.async.wait_group 2" in sources[4]
    assert kernels.count("cuda", sources[4])["matrix_unit"] == 1
