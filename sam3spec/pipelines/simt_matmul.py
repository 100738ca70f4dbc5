"""A float32 matmul schedule for CUDA without tensor cores: dlight's Matmul with a register tile it lacks.

dl.gpu.Matmul gives CUDA one config: 8 x 16 threads, each a 4 x 4 tile, K in steps of 16, float2 vectors.
Measured on an H200 (2026-12-01, SAM3's trunk shapes, float32 strict), two virtual threads per axis (each thread
then holds a 4 x 4 tile at two strides, 8 x 8 in all) ran the 5184 x 1024 x {3072, 1024, 4736} and
5184 x 4736 x 1024 linears at 30-32 TFLOP/s against 19 with dlight's config, and attention's Q.K^T at 22 against
16; the best of 20 configs on those shapes. dlight's config stays for N <= 64 (attention's P.V: 18 TFLOP/s
either way) and below 1024 rows in all (batch x M): the 64 x 128 block leaves a short sequence's grid a few
blocks for 132 SMs (the text encoder, M = 32, ran 25.6 ms with it against 11.9 without)."""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir.dlight.gpu.matmul import Matmul

from sam3spec.pipelines.tensor_core import matmul_form

VTHREAD_2X2 = Matmul.Config(block_size_x=8, block_size_y=16, vthread_x=2, vthread_y=2, micro_size_x=4,
                            micro_size_y=4, micro_size_k=16, vector_size=2, unroll=256, use_shared=True,
                            storage_align=True, inner_x=False)


class SimtMatmul(Matmul):
    """dl.gpu.Matmul, with VTHREAD_2X2 for CUDA float32 matmuls with at least 1024 rows (batch x M) and N above 64
    (or symbolic)."""

    def apply(self, func, target, tunable):
        self._config = None
        if isinstance(func, tirx.PrimFunc) and target.kind.name == "cuda":
            found = matmul_form(func, batch=True)
            if found is not None and found[1] == ("float32", "float32"):
                s, m, n = (int(e) if isinstance(e, tirx.IntImm) else None for e in found[0][:3])
                if (s is None or m is None or s * m >= 1024) and (n is None or n > 64):
                    self._config = VTHREAD_2X2
        return super().apply(func, target, tunable)

    def get_configs(self, target):
        return self._config or super().get_configs(target)
