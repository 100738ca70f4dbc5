"""A GPU schedule for matmuls with few outputs and a long reduction: a few queries attending over the image's
5184 tokens (the geometry encoder's and SAM mask decoder's cross-attention, P.V: [8, L, 5184] x [8, 5184, 32]
with L prompt tokens).

dlight's Matmul tiles the outputs over threads and leaves each thread the whole K: 8 x L x 32 outputs give a
few dozen threads, each summing 5184 products in a row. Measured on an H100 (2026-12-05, `profile`, cuda float32):
the geometry encoder's P.V took 1.65 ms per call and the mask decoder's 1.0 ms, a fifth of each component's
time. Here each output is one thread block and K is spread over its threads (TIR's cross-thread reduction)."""

from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.gpu.base import GPUScheduleRule


class LongReductionMatmul(GPUScheduleRule):
    """A reduction block (no prologue; at most one elementwise epilogue, as mixed precision's cast to float16)
    whose reduction extent is at least `min_reduction` and whose outputs, where their count is static, number at
    most `max_outputs` (a symbolic count is a prompt length here; a larger static count is a weight matmul, left
    to dlight's tiles, which read a weight once for many outputs): one thread block per output, the reduction
    over `threads` threads."""

    def __init__(self, min_reduction: int = 1024, max_outputs: int = 4096, threads: int = 128):
        self.min_reduction, self.max_outputs, self.threads = min_reduction, max_outputs, threads

    def apply(self, func, target, _tunable):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None or not 1 <= len(infos) <= 2 or not infos[0].is_reduction():
            return None
        epilogue = infos[1] if len(infos) == 2 else None
        if epilogue is not None and (not epilogue.is_injective() or len(epilogue.iters) != len(infos[0].iters) - 1):
            return None
        iters = infos[0].iters
        if len(iters) < 2 or iters[-1].kind != "R" or any(i.kind != "S" for i in iters[:-1]):
            return None
        reduction = iters[-1].dom
        if not isinstance(reduction, int) or reduction < self.min_reduction:
            return None
        extents = [i.dom for i in iters[:-1]]
        if all(isinstance(e, int) for e in extents) and math.prod(extents) > self.max_outputs:
            return None
        block = infos[0].block_rv
        if len(sch.get(block).reads) != 2:
            return None
        # the static output axes fused into blockIdx.y, a symbolic one (the prompt's tokens) as blockIdx.x, so that
        # no index divides by a symbolic extent
        static = [i.loop_rv for i in iters[:-1] if isinstance(i.dom, int)]
        symbolic = [i.loop_rv for i in iters[:-1] if not isinstance(i.dom, int)]
        if len(symbolic) > 1:
            return None
        sch.reorder(*static, *symbolic, iters[-1].loop_rv)
        serial, lanes = sch.split(iters[-1].loop_rv, [None, self.threads])
        sch.reorder(lanes, serial)   # each thread sums its share of K, then TIR sums the threads' (allreduce)
        outer = sch.get_loops(block)[: len(static) + len(symbolic)]
        if static:
            sch.bind(sch.fuse(*outer[: len(static)]), "blockIdx.y" if symbolic else "blockIdx.x")
        if symbolic:
            sch.bind(outer[-1], "blockIdx.x")
        sch.bind(lanes, "threadIdx.x")
        if epilogue is not None:   # each block's one output, cast where it is summed
            sch.reverse_compute_at(epilogue.block_rv, outer[-1] if symbolic else sch.get_loops(block)[0])
            sch.set_scope(block, 0, "local")
        return sch

