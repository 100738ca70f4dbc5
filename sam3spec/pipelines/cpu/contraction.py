"""Rule: contractions with a vectorisable spatial axis J (matmul, batch and NT matmul, linear + epilogue,
attention's products, convolutions, pooling, column reductions): a row_tile x vec_lanes register tile, operands
not contiguous along J repacked into K x vj panels first."""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx
from tvm.s_tir import Schedule
from tvm.s_tir.schedule import SBlockRV

from sam3spec.pipelines.cpu.analysis import (
    _get_sblock_realize,
    collect_loads, const, is_reduction_block, parallel_outer, tile_size, total_const, trivial_iters, uses_var,
    vectorize_innermost,
)
from sam3spec.pipelines.cpu.config import DEFAULT_CFG, TileConfig
from sam3spec.pipelines.cpu.spatial import rule_spatial


def _panel_width(outer, inner, var) -> int | None:
    """c if (outer, inner) is (var // c, var % c): a pre-packed panel operand (prepack.packed_matmul)."""
    if (isinstance(outer, tvm.ir.prim.expr.FloorDiv) and isinstance(inner, tvm.ir.prim.expr.FloorMod)
            and outer.a.same_as(var) and inner.a.same_as(var)):
        c = const(outer.b)
        return c if c is not None and c == const(inner.b) else None
    return None


def _index_class(indices, var) -> str:
    """How a buffer access depends on iter `var`: 'none', 'contig', 'strided',
    'plain' (only as a whole non-last index of a plain-var access), 'panel'
    ([var // c, ..., var % c]: already packed), 'bad'."""
    uses = [i for i, idx in enumerate(indices) if uses_var(idx, var)]
    if not uses:
        return "none"
    last = len(indices) - 1
    if uses == [last]:
        idx = indices[last]
        if isinstance(idx, tirx.Var):
            return "contig"
        # affine in var with coefficient 1 (e.g. x + rx for a stride-1 conv)?
        try:
            coeff = tvm.sym.detect_linear_equation(idx, [var])
        except Exception:  # pylint: disable=broad-except
            coeff = []
        if len(coeff) == 2 and const(coeff[0]) == 1:
            return "contig"
        return "strided"
    if len(uses) == 2 and uses[1] == last and _panel_width(indices[uses[0]], indices[last], var):
        return "panel"
    if len(uses) == 1 and all(isinstance(i, tirx.Var) for i in indices):
        if not any(a.same_as(b) for n, a in enumerate(indices) for b in indices[n + 1 :]):
            return "plain"
    return "bad"


def _reads_of(sch: Schedule, block: SBlockRV):
    """[(read index in block.reads, buffer, indices)] for every input of a
    single-store reduction block (excluding the accumulator), or None."""
    stmt = sch.get(block)
    body = stmt.body
    if not isinstance(body, tirx.BufferStore) or len(stmt.writes) != 1:
        return None
    out_buf = stmt.writes[0].source
    loads: list = []
    collect_loads(body.value, loads)
    result = []
    for ridx, region in enumerate(stmt.reads):
        buf = region.source
        if buf.same_as(out_buf):
            continue
        accesses = [list(ld.indices) for ld in loads if ld.source.same_as(buf)]
        if not accesses:
            return None
        # all loads of one buffer must agree (a*a is fine, a[i]+a[i+1] is not)
        first = accesses[0]
        for acc in accesses[1:]:
            if len(acc) != len(first) or not all(
                tvm_ffi.structural_equal(a, b) for a, b in zip(acc, first)
            ):
                return None
        result.append((ridx, buf, first))
    return result


_COST = {"none": 0, "contig": 0, "panel": 0, "plain": 1, "strided": 2}


def _panel_map(
    ndim: int, jdim: int, rdims: list[int], vj: int, j_extent: int | None
) -> tirx.IndexMap:
    """Layout for a packed operand: [other spatial dims, J // vj, reduction dims,
    J % vj], e.g. B[k, j] -> B[j // vj, k, j % vj] or data[n, c, y, x] ->
    data[n, y, x // vj, c, x % vj]: one contiguous (reduction x vj) panel per
    output tile. If vj does not divide J, only move J innermost (B[j, k] -> B[k, j])."""
    rest = [d for d in range(ndim) if d != jdim]
    if j_extent is None or j_extent % vj != 0:
        return tirx.IndexMap.from_func(lambda *ax: [ax[d] for d in rest] + [ax[jdim]], ndim=ndim)
    spatial = [d for d in rest if d not in rdims]
    reduce_ = [d for d in rest if d in rdims]

    def _fn(*ax):
        return (
            [ax[d] for d in spatial] + [ax[jdim] // vj] + [ax[d] for d in reduce_] + [ax[jdim] % vj]
        )

    return tirx.IndexMap.from_func(_fn, ndim=ndim)


def contraction_plan(sch: Schedule, block: SBlockRV, cfg: TileConfig, padded_rows: int | None = None):
    """Choose the axes of :func:`rule_contraction` without touching the schedule.

    Returns None if the block has no usable vector axis, else a dict with
    ``j`` (vector axis), ``i`` (register-row axis or None), ``classes`` (how
    each input depends on J), ``reads``, ``s_iters``, ``r_iters``.
    """
    stmt = sch.get(block)
    if len(stmt.writes) != 1 or not is_reduction_block(sch, block):
        return None
    iters = trivial_iters(sch, block)
    if iters is None:
        return None
    s_iters = [it for it in iters if it.kind == "S"]
    r_iters = [it for it in iters if it.kind == "R"]
    if not s_iters or not r_iters:
        return None
    reads = _reads_of(sch, block)
    if not reads:
        return None
    write_indices = list(stmt.writes[0].region)
    write_last = write_indices[-1].min if write_indices else None

    # --- choose J (vector axis) ---------------------------------------------
    best = None
    for it in s_iters:
        if it.const is not None and it.const < 4:
            continue
        classes = [_index_class(idx, it.var) for _, _, idx in reads]
        if "bad" in classes:
            continue
        if all(c == "none" for c in classes):
            continue  # J must feed from some input (otherwise it is a broadcast)
        has_reuse = any(c == "none" for c in classes)
        if "plain" in classes and not has_reuse:
            continue  # repacking without reuse is just a transpose (softmax rows)
        # symbolic J works (tail predicate, no vectorisation) but any constant J is better
        cost = max(_COST[c] for c in classes) + (3 if it.const is None else 0)
        is_write_last = write_last is not None and isinstance(write_last, tirx.Var) and (
            write_last.same_as(it.var)
        )
        key = (cost, 0 if is_write_last else 1, -it.pos)
        if best is None or key < best[0]:
            best = (key, it, classes)
    if best is None:
        return None
    _, j_it, j_classes = best

    # --- choose I (register-tile rows) ---------------------------------------
    a_side = [idx for (_, _, idx), c in zip(reads, j_classes) if c == "none"]
    b_side = [idx for (_, _, idx), c in zip(reads, j_classes) if c != "none"]

    def _uses(idx_list, var):
        return any(uses_var(e, var) for e in idx_list)

    i_it = None
    i_key = None
    for it in s_iters:
        if it is j_it:
            continue
        in_a = any(_uses(idx, it.var) for idx in a_side)
        in_b = any(_uses(idx, it.var) for idx in b_side)
        if not in_a and not in_b:
            continue
        key = (
            0 if (in_a and not in_b) else (1 if in_a else 2),
            0 if it.const is None or it.const >= cfg.row_tile else 1,
            -it.pos,
        )
        if i_key is None or key < i_key:
            i_key, i_it = key, it
    rows_inside = i_it is not None and i_it.const is None and not (
        padded_rows and tvm.sym.Analyzer().can_prove_equal(tvm.tirx.floormod(i_it.extent, padded_rows), 0))
    symbolic_rows = i_it if rows_inside else None
    if rows_inside:
        # a symbolic row axis put a bounds check on every register row and its tile in a heap workspace (fusion's
        # text cross-attention scores, [8, 5184, 32] x [8, 32, prompt_len]: 16 -> 5.6 ms): its rows go one at a
        # time inside each task instead
        i_it = None
    return {
        "rows_inside": rows_inside,
        "symbolic_rows": symbolic_rows,
        "j": j_it,
        "i": i_it,
        "classes": j_classes,
        "reads": reads,
        "b_side": b_side,
        "s_iters": s_iters,
        "r_iters": r_iters,
    }


def _store_along_output_rows(sch: Schedule, wb: SBlockRV, outside: int) -> None:
    """The write-back's tile loop that walks the output's last axis put innermost, where another one is: a
    transposed convolution's depth-to-space (or any permuting epilogue) inlined into the write-back otherwise
    stores one vector across as many output planes (SAM's 2x2 up-convolutions: 16 lanes 331 KB apart)."""
    loops = sch.get_loops(wb)[outside:]
    realize = _get_sblock_realize(sch, wb)
    last = sch.get(wb).writes[0].region[-1].min
    bound = [val for iv, val in zip(sch.get(wb).iter_vars, realize.iter_values) if uses_var(last, iv.var)]
    walking = [lp for lp in loops if const(sch.get(lp).extent) not in (None, 1)
               and any(uses_var(val, sch.get(lp).loop_var) for val in bound)]
    if len(walking) == 1 and not walking[0].same_as(loops[-1]):
        sch.reorder(loops[-1], walking[0])


def _vector_tile(plan: dict, cfg: TileConfig) -> int:
    """The register tile's width along J: a prepacked panel's width, else a power-of-two divisor of J."""
    j_it = plan["j"]
    vj = tile_size(j_it.const, cfg.col_tile, cfg.vec_lanes // 4, pow2=True)
    for (_, _, idx), cls in zip(plan["reads"], plan["classes"]):
        if cls == "panel":  # the tile is the panel: j // c and j % c become the split loops
            vj = _panel_width(next(e for e in idx[:-1] if uses_var(e, j_it.var)), idx[-1], j_it.var)
    return vj


def _pad_rows(sch: Schedule, block: SBlockRV, cfg: TileConfig, plan: dict) -> dict:
    """A symbolic row axis padded to whole register tiles (``pad_einsum``: the rows copied into a zero-padded
    buffer, the result's extra rows never stored), so those rows get register tiles instead of one row at a time.
    The plan of the padded block (None: no contraction any more), or `plan` unchanged where padding does not apply."""
    rows = cfg.rows_for(_vector_tile(plan, cfg))
    var = plan["symbolic_rows"].var
    last = sch.get(block).writes[0].region[-1].min
    if not (isinstance(last, tirx.Var) and last.same_as(plan["j"].var)):
        return plan  # the rows are the output's last axis: its stores would be a predicated scalar per element
    if any(it.const is None for it in plan["s_iters"] if not it.var.same_as(var)):
        return plan  # another symbolic axis (attention's tokens x tokens): parallel_outer would reorder the predicate
    try:
        sch.pad_einsum(block, [rows if iv.var.same_as(var) else 1 for iv in sch.get(block).iter_vars])
    except Exception:  # pylint: disable=broad-except  (not an einsum: a convolution's x + rx)
        return plan
    for producer in sch.get_producers(block):  # the zero-padded copy of the rows (read in place, guarded, the
        if sch.get(producer).name_hint.endswith("_pad"):  # K loop branches: 138 instead of 176 GFLOP/s)
            rule_spatial(sch, producer, cfg)
    padded = contraction_plan(sch, block, cfg, padded_rows=rows)
    if padded is not None:
        padded["padded"] = rows
    return padded


def rule_contraction(sch: Schedule, block: SBlockRV, cfg: TileConfig = DEFAULT_CFG) -> bool:  # pylint: disable=too-many-locals
    """Register-tiled reduction (matmul, batch/NT matmul, conv, column sums).

    Picks a spatial iter J to vectorise (every input that depends on J must be
    contiguous/strided in J, or a plain-index operand that gets repacked so J
    is innermost; constant extents preferred) and, when possible, a second
    spatial iter I whose inputs do not depend on J (register reuse).
    Returns False if the block does not fit (then rule_reduction applies).
    """
    plan = contraction_plan(sch, block, cfg)
    if plan is None:
        return False
    if plan["symbolic_rows"] is not None:
        plan = _pad_rows(sch, block, cfg, plan)
        if plan is None:
            return False
    j_it, i_it, j_classes = plan["j"], plan["i"], plan["classes"]
    reads = plan["reads"]
    s_iters, r_iters = plan["s_iters"], plan["r_iters"]

    # --- repack J-dependent operands into contiguous K x vj panels ------------
    vj = _vector_tile(plan, cfg)
    r_vars = [it.var for it in r_iters]
    for (ridx, _buf, idx), cls in zip(reads, j_classes):
        if cls == "contig":
            # already contiguous: repack into panels only if it pays off (plain
            # indices, vj | J, each element reused >= 64 times) -- a K x vj panel
            # read with a power-of-two row stride (N = 1024) thrashes the caches
            # (4 KiB aliasing: 576x4096x1024 ran at 15 instead of 60+ GFLOP/s)
            plain = all(isinstance(e, tirx.Var) for e in idx)
            if not (plain and j_it.const is not None and j_it.const % vj == 0):
                continue
            reuse = total_const(
                [it.extent for it in s_iters if not any(uses_var(e, it.var) for e in idx)]
            )
            if reuse is None or reuse < 64:  # None: a symbolic extent, here a prompt count (tens of rows)
                continue
        elif cls != "plain":
            continue
        jdim = next(d for d, e in enumerate(idx) if e.same_as(j_it.var))
        rdims = [d for d, e in enumerate(idx) if any(e.same_as(v) for v in r_vars)]
        pack = sch.cache_read(block, ridx, "global")
        sch.transform_layout(block, ("read", ridx), _panel_map(len(idx), jdim, rdims, vj, j_it.const))
        rule_spatial(sch, pack, cfg)

    # --- tile -----------------------------------------------------------------
    # loop handles are still valid (cache_read/transform_layout do not touch them)
    j_outer, j_inner = sch.split(j_it.loop, [None, vj])
    if i_it is not None:
        rows = plan.get("padded") or cfg.rows_for(vj)
        vi = tile_size(i_it.const, rows, max(rows // 2, 1))
        i_outer, i_inner = sch.split(i_it.loop, [None, vi])
    else:
        i_outer = i_inner = None
    others = [it for it in sorted(s_iters, key=lambda t: t.pos) if it is not j_it and it is not i_it]
    inside = []
    tiles = i_it.const // vi if i_it is not None and i_it.const is not None else 0
    if "panel" in j_classes and tiles > cfg.row_block and tiles % cfg.row_block == 0:
        # weight panels: a block of row tiles stays in cache while every panel passes over it
        i_block, i_outer = sch.split(i_outer, [None, cfg.row_block])
        outer = [it.loop for it in others] + [i_block, j_outer, i_outer]
    elif plan.get("padded"):  # tasks over the constant loops, the symbolic row tiles inside each (as rows_inside)
        outer = [it.loop for it in others if it.const is not None] + [j_outer]
        inside = [it.loop for it in others if it.const is None] + [i_outer]
    elif plan["rows_inside"]:  # tasks over the constant loops, the symbolic ones inside each task
        outer = [it.loop for it in others if it.const is not None] + [j_outer]
        inside = [it.loop for it in others if it.const is None]
    else:
        outer = [it.loop for it in others] + [j_outer] + ([i_outer] if i_outer is not None else [])
    inner = [i_inner] if i_inner is not None else []
    inner.append(j_inner)
    r_loops = [it.loop for it in sorted(r_iters, key=lambda t: t.pos)]
    sch.reorder(*outer, *inside, *r_loops, *inner)

    # accumulate into a local register tile; fuse elementwise epilogues into the write-back
    wb = sch.cache_write(block, 0, "local")
    padded = plan.get("padded", False)
    if padded:  # the padded rows' copy-out (pad_einsum's consumer) stores only the real rows: it is the write-back
        (unpad,) = sch.get_consumers(wb)
        sch.reverse_compute_at(wb, (outer + inside)[-1], preserve_unit_loops=True)
        wb, copy = unpad, wb
    for consumer in sch.get_consumers(wb):
        try:
            sch.reverse_compute_inline(consumer)
        except Exception:  # pylint: disable=broad-except
            pass
    sch.reverse_compute_at(wb, (outer + inside)[-1], preserve_unit_loops=True)
    if padded:
        sch.compute_inline(copy)
    _store_along_output_rows(sch, wb, len(outer + inside))
    vectorize_innermost(sch, wb, cfg.vec_lanes)
    # annotate before decompose_reduction: afterwards the update block is no
    # longer a "reduction block" and vectorize() refuses it
    if i_inner is not None:
        sch.unroll(i_inner)
    sch.vectorize(j_inner)
    parallel_outer(sch, outer, cfg.fuse)
    # last: after decomposition the update block is no longer a "reduction block"
    # and loop annotations (parallel/vectorize) are refused
    sch.decompose_reduction(block, r_loops[0])
    return True
