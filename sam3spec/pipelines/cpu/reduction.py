"""Rule: any reduction no other rule takes: spatial loops outermost, fused, parallel; the reduction loop serial."""

from __future__ import annotations

from tvm.s_tir import Schedule
from tvm.s_tir.schedule import SBlockRV

from sam3spec.pipelines.cpu.analysis import parallel_outer, total_const, trivial_iters
from sam3spec.pipelines.cpu.config import DEFAULT_CFG, TileConfig


def rule_reduction(sch: Schedule, block: SBlockRV, cfg: TileConfig = DEFAULT_CFG) -> bool:
    """Generic reduction: spatial loops outermost, fused and parallel; reduction serial."""
    iters = trivial_iters(sch, block)
    if iters is None:
        # At least try to parallelise a leading data-parallel loop.
        loops = sch.get_loops(block)
        if loops:
            sch.parallel(loops[0])
        return True
    by_pos = sorted(iters, key=lambda it: it.pos)
    s_iters = [it for it in by_pos if it.kind == "S"]
    r_iters = [it for it in by_pos if it.kind == "R"]
    if [it.kind for it in by_pos] != ["S"] * len(s_iters) + ["R"] * len(r_iters):
        sch.reorder(*[it.loop for it in s_iters + r_iters])
    if not s_iters:
        return True
    total = total_const([it.extent for it in s_iters])
    if total is None or total >= 64:
        parallel_outer(sch, [it.loop for it in s_iters], cfg.fuse)
    return True
