"""The GPU pipeline's named choices (sam3spec.pipelines.gpu_dlight) and the pieces that let a library compiled
here run on another machine: each rewrite checked by running it (on the CPU) against PyTorch, the Metal and
CUDA compiles of real components, the weight records, and the nvcc JIT a runtime-only GPU machine uses."""

import json
import shutil
import tarfile

import numpy as np
import pytest
import torch
import tvm
from conftest import ROOT, port_command
from tvm import relax
from tvm.relax.frontend.torch import from_exported_program

from sam3spec.pipelines import gpu_dlight
from sam3spec.runtime import loader


class _ClipAndScale(torch.nn.Module):
    """clip with float bounds (exported as float64 scalars), one of them infinite, around a matmul."""

    def forward(self, x, w):
        return torch.clamp((x @ w).clamp(min=-0.5) * 0.25, max=0.75)


def _run(mod: tvm.IRModule, *args: np.ndarray) -> np.ndarray:
    """`mod` through TVM's default CPU pipeline, run on `args`."""
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(a) for a in args])
    return (out[0] if not hasattr(out, "numpy") else out).numpy()   # the exported program returns a tuple


@pytest.fixture(scope="module")
def clip_module():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(16, 64, generator=g), torch.randn(64, 32, generator=g)
    program = torch.export.export(_ClipAndScale(), (x, w))
    return from_exported_program(program), x, w, _ClipAndScale()(x, w).numpy()


def test_float64_as_float32_keeps_clip_bounds_scalar(clip_module):
    mod, x, w, want = clip_module
    assert "T.float64" in mod.script()
    rewritten = gpu_dlight.float64_as_float32()(mod)
    assert "float64" not in rewritten.script() and "R.clip(" in rewritten.script()
    np.testing.assert_allclose(_run(rewritten, x.numpy(), w.numpy()), want, atol=1e-5)   # matmul order only


def test_clip_as_min_max_equals_clip_and_lets_mixed_precision_run(clip_module):
    mod, x, w, want = clip_module
    rewritten = gpu_dlight.clip_as_min_max()(mod)
    assert "R.clip(" not in rewritten.script() and "R.maximum(" in rewritten.script()
    np.testing.assert_allclose(_run(rewritten, x.numpy(), w.numpy()), want, atol=1e-5)   # matmul order only
    with pytest.raises(Exception, match="Expected TensorType"):  # the TVM 0.27 failure clip_as_min_max avoids
        relax.transform.ToMixedPrecision(out_dtype="float32")(mod)
    mixed = relax.transform.ToMixedPrecision(out_dtype="float32")(rewritten)
    assert 'R.matmul(' in mixed.script() and '"float16"' in mixed.script()
    got = _run(mixed, x.numpy(), w.numpy())
    half = torch.clamp((x.half().float() @ w.half().float()).clamp(min=-0.5) * 0.25, max=0.75).numpy()
    np.testing.assert_allclose(got, half, atol=1e-3)        # float16 operands, as autocast computes them
    assert np.abs(got - want).max() > 1e-4                   # and not the float32 ones


def test_unknown_mixed_precision_is_refused():
    with pytest.raises(ValueError, match="float16 only"):
        gpu_dlight.pipeline(tvm.target.Target({"kind": "cuda", "arch": "sm_90"}), mixed_precision="bfloat16")


def _batched_matmul(rows, k: int, n: int, heads: int = 8, mixed: bool = False) -> tvm.tirx.PrimFunc:
    """[heads, rows, k] x [heads, k, n], as a prompt's tokens attending over the image (P.V); mixed: float16
    operands summed in float32 and cast back to float16 (an epilogue block), as mixed_precision makes it."""
    from tvm import te

    dtype = "float16" if mixed else "float32"
    a = te.placeholder((heads, rows, k), name="a", dtype=dtype)
    b = te.placeholder((heads, k, n), name="b", dtype=dtype)
    r = te.reduce_axis((0, k), name="r")
    c = te.compute((heads, rows, n), lambda h, i, j: te.sum(a[h, i, r].astype("float32") * b[h, r, j].astype(
        "float32"), axis=r), name="c")
    if mixed:
        c = te.compute(c.shape, lambda *i: c(*i).astype("float16"), name="cast")
    return te.create_prim_func([a, b, c])


def test_long_reduction_matmul_takes_few_outputs_over_a_long_k_and_reduces_across_threads():
    from sam3spec.pipelines.long_reduction import LongReductionMatmul

    target = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
    rule = LongReductionMatmul()
    rows = tvm.tirx.Var("rows", "int64")
    sch = rule.apply(_batched_matmul(rows, 5184, 32), target, False)
    assert sch is not None
    source = tvm.tirx.build(sch.mod, target=target).imports[0].inspect_source()
    assert "blockIdx.x" in source and "threadIdx.x" in source and "__shfl" in source   # the cross-thread sum
    assert rule.apply(_batched_matmul(4, 5184, 32), target, False) is not None        # 1024 outputs
    assert rule.apply(_batched_matmul(rows, 256, 32), target, False) is None           # a short reduction
    assert rule.apply(_batched_matmul(5184, 5184, 32), target, False) is None          # 1.3 M outputs: dlight's
    assert rule.apply(_batched_matmul(rows, 5184, 32), tvm.target.Target("llvm"), False) is None
    mixed = rule.apply(_batched_matmul(rows, 5184, 32, mixed=True), target, False)   # with its cast epilogue
    source = tvm.tirx.build(mixed.mod, target=target).imports[0].inspect_source()
    assert "__shfl" in source and "((half)" in source


def test_weight_match_tells_identical_close_and_other_weights():
    g = np.random.default_rng(0)
    w = g.standard_normal((64, 32)).astype(np.float32)
    record = loader.describe_weight("w", w)
    assert loader.weight_match(record, w.copy()) == "identical"
    assert loader.weight_match(record, np.nextafter(w, np.float32(np.inf))) == "close"   # last-bit differences
    assert loader.weight_match(record, g.standard_normal((64, 32)).astype(np.float32)) is None  # another seed
    assert loader.weight_match(record, w.astype(np.float64)) is None
    assert loader.weight_match(record, w[:32]) is None


GPU_COMPONENTS = ["scoring_box_head", "sam_prompt_encoder"]   # clip bounds; an empty concat operand


@pytest.fixture(scope="module")
def metal_port():
    result = port_command("manifests/sam3-image-tiny.yaml", "--target", "metal",
                          *[a for c in GPU_COMPONENTS for a in ("-c", c)])
    return result, json.loads((ROOT / "build" / "sam3-image-tiny" / "metal" / "report.json").read_text())


def test_metal_compiles_on_linux_and_says_it_did_not_verify(metal_port):
    result, report = metal_port
    assert result.returncode == 0, result.stderr[-3000:]
    assert [c["status"] for c in report["components"]] == ["compiled"] * len(GPU_COMPONENTS)
    md = (ROOT / "build" / "sam3-image-tiny" / "metal" / "report.md").read_text()
    assert f"0 of {len(GPU_COMPONENTS)} components verified." in md
    assert "**Not verified**" in md and "no metal device on this machine" in md
    assert "--rpc MAC_ADDRESS:9090" in md and "nox -s port-metal -- manifests/sam3-image-tiny.yaml" in md
    for name in GPU_COMPONENTS:
        out = ROOT / "build" / "sam3-image-tiny" / "metal" / name
        source = (out / "kernels.metal").read_text()
        assert "kernel void" in source and "double" not in source   # Metal has no float64
        with tarfile.open(out / "lib.tar") as objects:   # object files, linked by the Mac when loaded
            assert objects.getnames() and all(n.endswith(".o") for n in objects.getnames())
        compiled = json.loads((out / "compile.json").read_text())
        assert compiled["metal_check"]["ok"], compiled["metal_check"]["problems"]
        assert compiled["kernels"]["kernels"] == source.count("kernel void") > 0


def test_metal_fp16_puts_matmuls_on_simdgroup_matrices():
    """metal-fp16 on a component with linear layers: its matmuls take sam3spec's float16 x float16 -> float32
    simdgroup schedule, the report counts them and the MSL passes the static limits check."""
    result = port_command("manifests/sam3-image-tiny.yaml", "--target", "metal-fp16", "-c", "sam_mask_decoder")
    assert result.returncode == 0, result.stderr[-3000:]
    out = ROOT / "build" / "sam3-image-tiny" / "metal-fp16"
    compiled = json.loads((out / "sam_mask_decoder" / "compile.json").read_text())
    assert compiled["schedule"]["rules"].get("SimdgroupMatmul", 0) == compiled["kernels"]["matrix_unit"] > 0
    assert compiled["metal_check"]["ok"], compiled["metal_check"]["problems"]
    source = (out / "sam_mask_decoder" / "kernels.metal").read_text()
    assert "simdgroup_float8x8" in source and "simdgroup_half8x8" in source
    md = (out / "report.md").read_text()
    assert "Kernels on the matrix units (`simdgroup_multiply_accumulate`)" in md and "Metal limits" in md
    assert "| sam_mask_decoder | compiled |" in md
    exported = json.loads((out / "sam_mask_decoder" / "export.json").read_text())
    assert exported["autocast"] == {"dtype": "float16", "device": "mps", "skipped": "no mps device here"}


@pytest.mark.skipif(not shutil.which("nvcc"), reason="no nvcc")
def test_cuda_jit_compiles_a_cuda_library_source_with_nvcc(tmp_path):
    """What a runtime-only GPU machine does when it loads a CUDA library: the CUDA C source becomes a fatbin."""
    import tvm_ffi

    from tvm.script import relax as R

    @tvm.script.ir_module
    class Add:
        @R.function
        def main(x: R.Tensor((256,), "float32")):  # noqa: F821 - TVMScript, not a forward reference
            with R.dataflow():
                y = R.add(x, x)
                R.output(y)
            return y

    target = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
    executable = tvm.compile(Add, target=target, relax_pipeline=gpu_dlight.pipeline(target))
    from sam3spec.runtime.compile import device_sources

    source = device_sources(executable)["cuda"]
    assert "__global__" in source
    loader.cuda_jit("sm_90")
    fatbin = bytes(tvm_ffi.get_global_func("tvm_callback_cuda_compile")(source))
    assert fatbin[:4] == bytes.fromhex("50ed55ba")   # the fatbin magic number
