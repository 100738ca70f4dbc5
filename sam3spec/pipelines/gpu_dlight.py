"""TVM's GPU pipeline (dlight Matmul/GEMV/Reduction/GeneralReduction/Fallback) for CUDA and Metal, usable
with dynamic shapes (RewriteDataflowReshape dropped: "padding factor ... is not divisible") and on Metal
without dlight's simdgroup MetalMatmul, which segfaults in Schedule.tensorize in apache-tvm 0.27."""

import contextlib

import tvm
from tvm.relax.backend.cuda import pipeline as cuda
from tvm.relax.backend.gpu_generic import pipeline as gpu_generic
from tvm.s_tir.dlight.gpu import matmul as dlight_matmul

from sam3spec.pipelines import dataflow_lower_passes


def _decline(*_args, **_kwargs):
    raise NotImplementedError("MetalMatmul disabled by sam3spec.pipelines.gpu_dlight")


@contextlib.contextmanager
def _generic_matmul_on_metal(target: tvm.target.Target):
    """dl.gpu.Matmul tries MetalMatmul first on Metal and falls back when it raises: make it raise."""
    if target.kind.name != "metal":
        yield
        return
    original = dlight_matmul.MetalMatmul.apply
    dlight_matmul.MetalMatmul.apply = _decline
    try:
        yield
    finally:
        dlight_matmul.MetalMatmul.apply = original


def pipeline(target: tvm.target.Target, dynamic_shapes: bool = False) -> tvm.transform.Pass:
    backend = cuda if target.kind.name == "cuda" else gpu_generic
    passes = [*backend.library_dispatch_passes(target), *backend.legalize_passes(target),
              *dataflow_lower_passes(backend, target, dynamic_shapes),
              *backend.finalize_passes(target)]

    @tvm.transform.module_pass(opt_level=0, name="sam3spec.gpu_dlight")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target, _generic_matmul_on_metal(target):
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
