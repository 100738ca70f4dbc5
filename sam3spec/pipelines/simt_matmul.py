"""A float32 matmul schedule for CUDA without tensor cores: dlight's Matmul with a register tile it lacks.

dl.gpu.Matmul gives CUDA one config: 8 x 16 threads, each a 4 x 4 tile, K in steps of 16, float2 vectors.
Measured on an H200 (2026-12-01, SAM3's trunk shapes, float32 strict), two virtual threads per axis (each thread
then holds a 4 x 4 tile at two strides, 8 x 8 in all) ran the 5184 x 1024 x {3072, 1024, 4736} and
5184 x 4736 x 1024 linears at 30-32 TFLOP/s against 19 with dlight's config, and attention's Q.K^T at 22 against
16; the best of 22 configs on those shapes. For N <= 64 (attention's P.V: 18 TFLOP/s either way) dlight's
config stays."""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir.dlight.gpu.matmul import Matmul

from sam3spec.pipelines.tensor_core import matmul_form

VTHREAD_2X2 = Matmul.Config(block_size_x=8, block_size_y=16, vthread_x=2, vthread_y=2, micro_size_x=4,
                            micro_size_y=4, micro_size_k=16, vector_size=2, unroll=256, use_shared=True,
                            storage_align=True, inner_x=False)


class SimtMatmul(Matmul):
    """dl.gpu.Matmul, with VTHREAD_2X2 for CUDA float32 matmuls whose N is above 64 or symbolic."""

    def apply(self, func, target, tunable):
        self._config = None
        if isinstance(func, tirx.PrimFunc) and target.kind.name == "cuda":
            found = matmul_form(func)
            if found is not None and found[1] == ("float32", "float32"):
                n = found[0][1]
                if not (isinstance(n, tirx.IntImm) and int(n) <= 64):
                    self._config = VTHREAD_2X2
        return super().apply(func, target, tunable)

    def get_configs(self, target):
        return self._config or super().get_configs(target)
