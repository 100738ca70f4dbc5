"""TVM's GPU pipeline (dlight Matmul/GEMV/Reduction/GeneralReduction/Fallback) for CUDA and Metal, usable
with dynamic shapes: RewriteDataflowReshape is dropped there ("padding factor ... is not divisible")."""

import tvm
from tvm.relax.backend.cuda import pipeline as cuda
from tvm.relax.backend.gpu_generic import pipeline as gpu_generic


def pipeline(target: tvm.target.Target, dynamic_shapes: bool = False) -> tvm.transform.Pass:
    backend = cuda if target.kind.name == "cuda" else gpu_generic
    lower = [p for p in backend.dataflow_lower_passes(target)
             if not (dynamic_shapes and p.info.name == "RewriteDataflowReshape")]
    passes = [*backend.library_dispatch_passes(target), *backend.legalize_passes(target), *lower,
              *backend.finalize_passes(target)]

    @tvm.transform.module_pass(opt_level=0, name="sam3spec.gpu_dlight")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


