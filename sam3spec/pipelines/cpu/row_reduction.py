"""Rule: functions whose reductions all run along the innermost axis (softmax, layer_norm, row sums): per-row
compute_at under parallel rows, as dlight's CPU Reduction does, with each long row summed into a vector of
partial sums (rfactor); rows shorter than a vector, or of a symbolic length, one row per iteration with no vector
loop; dlight's CPU Reduction for the rest."""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.ir import IRModule
from tvm.s_tir import Schedule

from sam3spec.pipelines.cpu.analysis import const, is_reduction_block, root_block
from sam3spec.pipelines.cpu.config import DEFAULT_CFG, TileConfig
from sam3spec.pipelines.cpu.contraction import contraction_plan


def rule_row_reductions(
    func: tirx.PrimFunc, target: tvm.target.Target | None, cfg: TileConfig = DEFAULT_CFG
) -> Schedule | None:
    """Whole-function rule for softmax / layer_norm / row sums: dlight's CPU
    ``Reduction`` (all blocks computed per row under one parallel loop,
    injective blocks vectorised). Only used when no reduction block of the
    function has a vector axis for :func:`rule_contraction` (dlight would
    otherwise also claim matmul + epilogue functions). None if it does not apply.
    """
    if target is None or target.kind.name != "llvm":
        return None
    sch = Schedule(IRModule({"main": func}))
    root = root_block(sch)
    if root is None:
        return None
    blocks = sch.get_child_blocks(root)
    reductions = [b for b in blocks if is_reduction_block(sch, b)]
    if not reductions or any(contraction_plan(sch, b, cfg) is not None for b in reductions):
        return None
    row = const(sch.get(sch.get_loops(blocks[-1])[-1]).extent)
    names = [sch.get(b).name_hint for b in blocks]
    short = row is None or row < cfg.vec_lanes
    own = _short_rows(func, names) if short else _vector_partials(func, names, cfg.vec_lanes)
    if own is not None:
        return own
    from tvm.s_tir.dlight.cpu import Reduction  # pylint: disable=import-outside-toplevel

    with target:
        result = Reduction().apply(func, target, False)
    if isinstance(result, list):
        result = result[0] if result else None
    return result


def _short_rows(func: tirx.PrimFunc, names: list[str]) -> Schedule | None:
    """Rows of a symbolic length (a prompt's tokens) or shorter than a vector: the output's rows fused and
    parallel, every other block inlined or computed per row, inner loops plain. dlight's schedule masks a 16-lane
    vector loop over such a row with a symbolic predicate, which LLVM scalarises: a softmax over 10 keys of 41472
    rows took 5.8 ms that way and 2.1 ms this way (2 threads, AMD EPYC). None if the blocks do not allow it."""
    try:
        sch = Schedule(IRModule({"main": func}))
        rows = _parallel_rows(sch, sch.get_sblock(names[-1]))
        if rows is None:
            return None
        for name in reversed(names[:-1]):
            block = sch.get_sblock(name)
            if not is_reduction_block(sch, block):
                try:
                    sch.compute_inline(block)
                    continue
                except Exception:  # pylint: disable=broad-except - read twice: computed per row instead
                    pass
            sch.compute_at(block, rows)
        return sch
    except Exception:  # pylint: disable=broad-except
        return None


def _parallel_rows(sch: Schedule, last):
    """The last block's loops but its innermost (the rows) fused and parallel; None if it has no row loop."""
    loops = sch.get_loops(last)
    if len(loops) < 2:
        return None
    rows = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
    sch.parallel(rows)
    return rows


def _lanes(sch: Schedule, block, lanes32: int) -> int:
    return max(2, lanes32 * 32 // sch.get(block).writes[0].source.dtype.bits)


def _vectorize_inner(sch: Schedule, block, lanes32: int) -> None:
    loops = sch.get_loops(block)
    extent = const(sch.get(loops[-1]).extent) if len(loops) > 1 else None
    if extent is not None and extent > _lanes(sch, block, lanes32):
        sch.vectorize(sch.split(loops[-1], [None, _lanes(sch, block, lanes32)])[1])


def _vector_partials(func: tirx.PrimFunc, names: list[str], lanes32: int) -> Schedule | None:
    """Each reduction over a static row of at least 4 vectors summed into one vector of partial sums, then across
    it: dlight's rule sums a row in one scalar chain, an add's latency per element (a layer norm over 256 values,
    a group norm's statistics over 2.6M: 24 -> 14 ms, then bound by memory). Rows fused and parallel, every block
    computed per row. None if no reduction qualifies or the blocks do not allow it."""
    try:
        sch = Schedule(IRModule({"main": func}))
        factored = 0
        for name in names:
            block = sch.get_sblock(name)
            loops = sch.get_loops(block)
            lanes = _lanes(sch, block, lanes32)
            extent = const(sch.get(loops[-1]).extent)
            if is_reduction_block(sch, block) and extent is not None and extent % lanes == 0 and extent >= 4 * lanes:
                sch.rfactor(sch.split(loops[-1], [None, lanes])[1], factor_axis=len(loops) - 1)
                factored += 1
        if not factored:
            return None
        names = [sch.get(b).name_hint for b in sch.get_child_blocks(root_block(sch))]
        last = sch.get_sblock(names[-1])
        rows = _parallel_rows(sch, last)
        if rows is None:
            return None
        _vectorize_inner(sch, last, lanes32)
        for name in reversed(names[:-1]):
            sch.compute_at(sch.get_sblock(name), rows, preserve_unit_loops=True)
        for name in names[:-1]:
            block = sch.get_sblock(name)
            if name.endswith("_rf"):  # partial sums [.., lanes] over the row's vectors: lanes innermost, unrolled
                loops = sch.get_loops(block)
                lanes = _lanes(sch, block, lanes32)
                (lane,) = [lp for lp in loops[1:-1] if const(sch.get(lp).extent) == lanes][:1]
                sch.reorder(loops[-1], lane)
                sch.decompose_reduction(block, loops[-1])
                sch.unroll(sch.get_loops(block)[-1])
            elif not is_reduction_block(sch, block):
                _vectorize_inner(sch, block, lanes32)
        return sch
    except Exception:  # pylint: disable=broad-except
        return None
