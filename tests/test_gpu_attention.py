"""The fused CUDA attention (sam3spec.pipelines.gpu_attention): which attentions it takes, that the pipeline
compiles them into one tensor-core kernel without a score tensor, and, where a CUDA device is, its numbers against
PyTorch's float64 attention, within twice autocast's float16 error (the reduced-precision rule of the manifests)."""

import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from sam3spec.pipelines import gpu_attention, gpu_dlight

CUDA = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})


def _sdpa(q_shape, k_shape, scale=0.125, bias=False, v_dim=None):
    """matmul(softmax(matmul(q, permute(k)) * scale [+ bias]), v), as the sdpa_matmul converter emits it."""
    v_shape = (*k_shape[:-1], v_dim or k_shape[-1])
    bb = relax.BlockBuilder()
    q = relax.Var("q", relax.TensorType(q_shape, "float32"))
    k = relax.Var("k", relax.TensorType(k_shape, "float32"))
    v = relax.Var("v", relax.TensorType(v_shape, "float32"))
    params = [q, k, v]
    if bias:
        params.append(relax.Var("bias", relax.TensorType((*q_shape[:-1], k_shape[-2]), "float32")))
    with bb.function("main", params):
        with bb.dataflow():
            kt = bb.emit(relax.op.permute_dims(k, [0, 1, 3, 2]))
            scores = bb.emit(relax.op.multiply(relax.op.matmul(q, kt), relax.const(scale, "float32")))
            if bias:
                scores = bb.emit(relax.op.add(scores, params[3]))
            probs = bb.emit(relax.op.nn.softmax(scores, axis=-1))
            out = bb.emit_output(relax.op.matmul(probs, v))
        bb.emit_func_output(out)
    return bb.get()


def _fused(mod):
    return tvm.transform.Sequential(gpu_attention.fuse())(mod).script()


def test_fuses_whole_blocks_of_head_dim_64_and_leaves_the_rest():
    fused = _fused(_sdpa((1, 2, 128, 64), (1, 2, 192, 64)))
    assert "fused_attention" in fused and "R.nn.softmax" not in fused and "R.matmul" not in fused
    for left in (_sdpa((1, 2, 100, 64), (1, 2, 192, 64)),        # queries not whole blocks of 64
                 _sdpa((1, 2, 128, 64), (1, 2, 200, 64)),        # keys not whole steps of 64
                 _sdpa((1, 2, 128, 32), (1, 2, 192, 32)),        # head dim 32
                 _sdpa((1, 2, 128, 64), (1, 2, 192, 64), bias=True)):
        script = _fused(left)
        assert "fused_attention" not in script and "R.nn.softmax" in script


def test_option_needs_cuda_and_float16():
    with pytest.raises(ValueError, match="mixed_precision: float16"):
        gpu_dlight.pipeline(CUDA, fused_attention=True)
    with pytest.raises(ValueError, match="cuda target"):
        gpu_dlight.pipeline(tvm.target.Target({"kind": "metal"}), fused_attention=True, mixed_precision="float16")


def _build(shape, scale=0.125):
    return tvm.compile(_sdpa(shape, shape, scale), target=CUDA, relax_pipeline=gpu_dlight.pipeline(
        CUDA, mixed_precision="float16", fused_attention=True, static_thread_memory=True))


def test_compiles_to_one_tensor_core_kernel_in_static_shared_memory():
    from sam3spec.runtime.compile import device_sources

    source = device_sources(_build((2, 3, 128, 64)))["cuda"]
    assert len(re.findall(r"__global__ void", source)) == 2   # declaration and definition of one kernel
    assert source.count("nvcuda::wmma::mma_sync") == 2        # q k^T, then P V
    shared = sum(int(n) * (2 if t == "half" else 4)
                 for t, n in re.findall(r"__shared__ alignas\(\d+\) (half|float) \w+\[(\d+)\]", source))
    assert 0 < shared <= 48 * 1024   # static shared memory's limit per block
    if shutil.which("nvcc"):
        result = subprocess.run(["nvcc", "--fatbin", "-arch=sm_90", "-x", "cu", "-", "-o", "/dev/null"],
                                input=source, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("shape", [(9, 16, 576, 64), (1, 16, 5184, 64)])   # SAM3's windowed and global blocks
def test_matches_pytorch_within_twice_autocast_error(shape):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=g) * 2 for _ in range(3))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    want = sdpa(q.double(), k.double(), v.double()).float()
    with torch.autocast("cuda", dtype=torch.float16):
        autocast = sdpa(q.cuda(), k.cuda(), v.cuda()).float().cpu()
    dev = tvm.cuda(0)
    vm = relax.VirtualMachine(_build(shape), dev)
    got = vm["main"](*[tvm.runtime.tensor(x.numpy(), dev) for x in (q, k, v)]).numpy()
    error, bar = np.abs(got - want.numpy()).max(), 2 * (autocast - want).abs().max().item()
    assert error <= bar, (error, bar)
