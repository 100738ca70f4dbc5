"""Rule: injective blocks: outer loops fused and parallel, the innermost constant loop vectorised; transposes
tiled 16x16 first."""

from __future__ import annotations

from tvm import sym
from tvm.ir import Range
from tvm.s_tir import Schedule
from tvm.s_tir.schedule import SBlockRV

from sam3spec.pipelines.cpu.analysis import (
    const, lanes_for, parallel_outer, tile_size, total_const, trivial_iters, uses_var,
)
from sam3spec.pipelines.cpu.config import DEFAULT_CFG, MIN_PARALLEL_EXTENT, TileConfig


def _contiguous_iter(index, iters: list, w_it, analyzer):
    """The iter (not `w_it`) along which a read's last `index` walks with stride 1, or None. Reshapes fused into
    a transpose index through floordiv/floormod, which the iters' bounds simplify away (a [5184, 256] input read
    as [8, 32, 5184] indexes its last axis (h * 32 + d) % 256, which is h * 32 + d: contiguous along d)."""
    index = analyzer.simplify(index)
    if uses_var(index, w_it.var):
        return None
    for it in iters:
        if it is w_it or it.const is None or it.const < 8 or not uses_var(index, it.var):
            continue
        if not uses_var(analyzer.simplify(index - it.var), it.var):
            return it
    return None


def _transpose_pair(sch: Schedule, block: SBlockRV):
    """(r, w) iters if the block writes along w (innermost loop) but some input is
    contiguous along another iter r (a transpose / permute_dims), else None."""
    iters = trivial_iters(sch, block)
    stmt = sch.get(block)
    if not iters or len(stmt.writes) != 1 or not stmt.writes[0].region:
        return None
    w_last = stmt.writes[0].region[-1].min
    w_users = [it for it in iters if uses_var(w_last, it.var)]
    if len(w_users) != 1 or w_users[0].pos != len(iters) - 1:
        return None
    w_it = w_users[0]
    if w_it.const is None or w_it.const < 8:
        return None
    analyzer = sym.Analyzer()
    for it in iters:
        if it.const is not None:
            analyzer.bind(it.var, Range.from_min_extent(0, it.const))
    for region in stmt.reads:
        if not region.region:
            continue
        r_it = _contiguous_iter(region.region[-1].min, iters, w_it, analyzer)
        if r_it is not None:
            return r_it, w_it
    return None


def _rule_transpose(sch: Schedule, block: SBlockRV, cfg: TileConfig) -> bool:
    """Tile a transpose 16x16 so both the gathered reads and the vector writes stay in L1."""
    pair = _transpose_pair(sch, block)
    if pair is None:
        return False
    r_it, w_it = pair
    iters = sorted(trivial_iters(sch, block), key=lambda it: it.pos)
    r_it, w_it = iters[r_it.pos], iters[w_it.pos]
    tile_r = tile_size(r_it.const, cfg.vec_lanes, cfg.vec_lanes // 2)
    tile_w = tile_size(w_it.const, cfg.vec_lanes, cfg.vec_lanes // 2)
    r_o, r_i = sch.split(r_it.loop, [None, tile_r])
    w_o, w_i = sch.split(w_it.loop, [None, tile_w])
    others = [it for it in iters if it is not r_it and it is not w_it]
    sch.reorder(*[it.loop for it in others], r_o, w_o, r_i, w_i)
    total = total_const([it.extent for it in iters])
    if total is None or total >= MIN_PARALLEL_EXTENT:
        parallel_outer(sch, [it.loop for it in others] + [r_o, w_o], cfg.fuse)
    sch.vectorize(w_i)
    return True


def rule_spatial(sch: Schedule, block: SBlockRV, cfg: TileConfig = DEFAULT_CFG) -> bool:
    """Injective/elementwise block: fuse + parallelise outer loops, vectorise the inner one.

    Transposes (an input contiguous along a different axis than the output) are
    tiled 16x16 first (see :func:`_rule_transpose`).
    """
    loops = sch.get_loops(block)
    if not loops:
        return False
    try:
        trial = sch.copy()
        if _rule_transpose(trial, trial.get_sblock(sch.get(block).name_hint), cfg):
            _rule_transpose(sch, block, cfg)
            return True
    except Exception:  # pylint: disable=broad-except
        pass
    extents = [sch.get(lp).extent for lp in loops]
    inner_c = const(extents[-1])
    lanes = lanes_for(inner_c, cfg.vec_lanes)
    vec_loop = None
    if lanes is not None:
        if lanes == inner_c:
            outer, vec_loop = loops[:-1], loops[-1]
        else:
            lo, vec_loop = sch.split(loops[-1], [None, lanes])
            outer = loops[:-1] + [lo]
    else:
        outer = loops
    total = total_const(extents)
    if outer and (total is None or total >= MIN_PARALLEL_EXTENT):
        parallel_outer(sch, outer, cfg.fuse)
    if vec_loop is not None:
        sch.vectorize(vec_loop)
    return True
