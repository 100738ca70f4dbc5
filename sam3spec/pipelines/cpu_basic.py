"""Basic CPU schedule pipeline: the stock TVM Relax CPU build leaves every TIR loop nest unscheduled (serial, scalar), ~100x slower than PyTorch.

``tvm.compile(mod, target=llvm)`` in apache-tvm 0.27 lowers each legalized
operator to a naive loop nest: no tiling, no vectorisation, no threads (a
1024x1024x4736 matmul ran at ~1.5 GFLOP/s vs ~85 for PyTorch on 2 cores).
dlight's CPU rules have no matmul rule and MetaSchedule crashes in this wheel,
so this module ships a small, deterministic hand schedule instead.

Public API
----------
``pipeline(target, dynamic_shapes=False)``
    The stock CPU Relax pipeline (``tvm.relax.pipeline`` pieces: library
    dispatch -> legalize + FuseOps/FuseTIR -> dataflow lowering -> finalize)
    with :func:`schedule_pass` inserted before the finalize passes. Use as
    ``tvm.compile(mod, target=target, relax_pipeline=pipeline(target))``.
    ``dynamic_shapes=True`` drops ``relax.transform.RewriteDataflowReshape``
    (it fails with "padding factor ... is not divisible" on symbolic shapes).
``schedule_pass(target=None)``
    The IRModule pass alone: schedules every not-yet-scheduled PrimFunc.
``schedule_prim_func(func)``
    Schedule one PrimFunc; returns it unchanged if nothing could be done.
``default_target(num_cores=None)``
    An llvm target for this host (``mcpu`` from LLVM's host detection, so
    AVX2/AVX-512 + FMA are used); the plain ``{"kind": "llvm"}`` target is
    generic x86-64 (SSE2 only), which costs ~3x on matmuls.

Rules (one function each, tried per root block after inlining)
--------------------------------------------------------------
* :func:`rule_inline` - compute-inline spatial blocks whose consumers are all
  spatial (elementwise chains such as GELU, reshape -> transpose chains).
* :func:`rule_contraction` - reduction blocks with a usable vector axis:
  matmul / batch matmul / NT matmul (the NT operand is repacked), the fused
  linear + bias + activation form, conv2d / depthwise conv / conv_transpose,
  column reductions. Register-tiled: ``[outer spatial, jo, io] (parallel) x
  reduction x [ii (unrolled), ji (vectorised)]`` accumulating in a local tile,
  elementwise epilogue fused into the write-back.
* :func:`rule_reduction` - every other reduction (softmax / layer_norm row
  reductions, sums, max): spatial loops moved outside and parallelised,
  reduction loop kept serial.
* :func:`rule_spatial` - injective / elementwise blocks: outer loops fused and
  parallelised, innermost constant-extent loop vectorised.

Every rule runs on a copy of the schedule; any error (ScheduleError or
otherwise) leaves that block as it was, so the build never fails because of
this module. Symbolic (dynamic) extents are handled: they are split with
predicates and never vectorised.
"""

from __future__ import annotations

import logging
import tvm
from tvm import relax, s_tir, tirx
from tvm.ir import IRModule
from tvm.s_tir import Schedule
from tvm.s_tir.schedule import LoopRV, SBlockRV

logger = logging.getLogger(__name__)

__all__ = [
    "pipeline",
    "schedule_pass",
    "schedule_prim_func",
    "default_target",
    "rule_inline",
    "rule_contraction",
    "rule_reduction",
    "rule_spatial",
]

# Tile parameters (fp32 lanes). 16 lanes = one AVX-512 register / two AVX2
# registers; LLVM splits wider-than-native vectors itself.
VEC_LANES = 16
ROW_TILE = 4
# Below this many (constant) iterations a loop nest is not worth a thread launch.
MIN_PARALLEL_EXTENT = 2048

_get_sblock_realize = tvm.get_global_func("s_tir.schedule.GetSBlockRealize")
# apache-tvm 0.27 moved TIR expression nodes into tvm.ir (BufferLoad -> TensorLoad)
_TensorLoad = tvm.ir.expr.TensorLoad
_Call = tvm.ir.expr.Call
_Expr = tvm.ir.expr.Expr


# ----------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------
def _const(expr) -> int | None:
    return int(expr.value) if isinstance(expr, tirx.IntImm) else None


def _is_reduction_block(sch: Schedule, block: SBlockRV) -> bool:
    return any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(block).iter_vars)


def _is_spatial_block(sch: Schedule, block: SBlockRV) -> bool:
    return all(iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(block).iter_vars)


def _vars_in(expr) -> list:
    """Free variables of a TIR expression."""
    return list(tirx.analysis.undefined_vars(expr))


def _uses_var(expr, var) -> bool:
    return any(v.same_as(var) for v in _vars_in(expr))


_CHILD_FIELDS = ("a", "b", "value", "condition", "true_value", "false_value", "base", "stride")


def _collect_loads(expr, out: list) -> None:
    """Append every buffer load inside a TIR expression (the wheel has no Python
    TIR visitor; loads are ``tvm.ir.expr.TensorLoad`` with ``.source``/``.indices``)."""
    if isinstance(expr, _TensorLoad):
        out.append(expr)
        for idx in expr.indices:
            _collect_loads(idx, out)
        return
    if isinstance(expr, _Call):
        for arg in expr.args:
            _collect_loads(arg, out)
        return
    for field in _CHILD_FIELDS:
        child = getattr(expr, field, None)
        if isinstance(child, _Expr):
            _collect_loads(child, out)


class _Iter:
    """One block iter bound 1:1 to one loop."""

    def __init__(self, var, kind: str, extent, loop: LoopRV, pos: int):
        self.var = var
        self.kind = kind  # "S" or "R"
        self.extent = extent
        self.const = _const(extent)
        self.loop = loop
        self.pos = pos  # loop depth


def _trivial_iters(sch: Schedule, block: SBlockRV) -> list[_Iter] | None:
    """Block iters if each is bound to exactly one of the block's loops, in any order.

    Returns None for opaque iters, compound bindings, predicates, or extra loops.
    """
    stmt = sch.get(block)
    realize = _get_sblock_realize(sch, block)
    if _const(realize.predicate) != 1:
        return None
    loops = sch.get_loops(block)
    loop_vars = [sch.get(lp).loop_var for lp in loops]
    if len(loops) != len(stmt.iter_vars):
        return None
    out = []
    used = set()
    for iv, val in zip(stmt.iter_vars, realize.iter_values):
        if iv.iter_type == tirx.IterVar.DataPar:
            kind = "S"
        elif iv.iter_type == tirx.IterVar.CommReduce:
            kind = "R"
        else:
            return None
        if not isinstance(val, tirx.Var):
            return None
        idx = next((i for i, lv in enumerate(loop_vars) if lv.same_as(val)), None)
        if idx is None or idx in used:
            return None
        loop = sch.get(loops[idx])
        if _const(loop.min) != 0:
            return None
        used.add(idx)
        out.append(_Iter(iv.var, kind, iv.dom.extent, loops[idx], idx))
    return out


def _pick_factor(extent: int, candidates: tuple[int, ...]) -> int | None:
    for c in candidates:
        if extent % c == 0:
            return c
    return None


def _lanes_for(extent: int | None, max_lanes: int = VEC_LANES) -> int | None:
    """Vector width for a constant-extent innermost loop, or None."""
    if extent is None or extent < 2:
        return None
    if extent <= max_lanes:
        return extent
    return _pick_factor(extent, tuple(c for c in (64, 32, 16, 8, 4) if c <= max(max_lanes, 4)))


def _total_const(extents) -> int | None:
    total = 1
    for e in extents:
        c = _const(e) if not isinstance(e, int) else e
        if c is None:
            return None
        total *= c
    return total


def _parallel_outer(sch: Schedule, loops: list[LoopRV], extents) -> LoopRV | None:
    """Fuse `loops` (a perfectly nested chain) and mark the result parallel."""
    if not loops:
        return None
    total = _total_const(extents)
    if total is not None and total < 2:
        return None
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    if total is None or total >= 2:
        sch.parallel(fused)
    return fused


def _vectorize_innermost(sch: Schedule, block: SBlockRV, max_lanes: int = VEC_LANES) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    inner = sch.get(loops[-1])
    lanes = _lanes_for(_const(inner.extent), max_lanes)
    if lanes is None:
        return
    if lanes == _const(inner.extent):
        sch.vectorize(loops[-1])
    else:
        _, vi = sch.split(loops[-1], [None, lanes])
        sch.vectorize(vi)


# ----------------------------------------------------------------------------
# rules
# ----------------------------------------------------------------------------
def rule_inline(sch: Schedule, root: SBlockRV) -> int:
    """Compute-inline spatial blocks all of whose consumers are spatial blocks.

    Producers of reductions (pad, transpose, reshape feeding a matmul/conv)
    stay materialised so the hot reduction loop keeps simple indexing.
    Returns the number of blocks inlined.
    """
    inlined = 0
    progress = True
    while progress:
        progress = False
        for block in sch.get_child_blocks(root):
            if not _is_spatial_block(sch, block):
                continue
            consumers = sch.get_consumers(block)
            if not consumers or not all(_is_spatial_block(sch, c) for c in consumers):
                continue
            try:
                sch.compute_inline(block)
            except Exception:  # pylint: disable=broad-except
                continue
            inlined += 1
            progress = True
            break
    return inlined


def rule_spatial(sch: Schedule, block: SBlockRV) -> bool:
    """Injective/elementwise block: fuse + parallelise outer loops, vectorise the inner one."""
    loops = sch.get_loops(block)
    if not loops:
        return False
    extents = [sch.get(lp).extent for lp in loops]
    inner_c = _const(extents[-1])
    lanes = _lanes_for(inner_c)
    vec_loop = None
    if lanes is not None:
        if lanes == inner_c:
            outer, vec_loop = loops[:-1], loops[-1]
            outer_ext = extents[:-1]
        else:
            lo, vec_loop = sch.split(loops[-1], [None, lanes])
            outer = loops[:-1] + [lo]
            outer_ext = extents[:-1] + [inner_c // lanes]
    else:
        outer, outer_ext = loops, extents
    total = _total_const(extents)
    if outer and (total is None or total >= MIN_PARALLEL_EXTENT):
        _parallel_outer(sch, outer, outer_ext)
    if vec_loop is not None:
        sch.vectorize(vec_loop)
    return True


def rule_reduction(sch: Schedule, block: SBlockRV) -> bool:
    """Generic reduction: spatial loops outermost, fused and parallel; reduction serial."""
    iters = _trivial_iters(sch, block)
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
    total = _total_const([it.extent for it in s_iters])
    if total is None or total >= 64:
        _parallel_outer(sch, [it.loop for it in s_iters], [it.extent for it in s_iters])
    return True


def _index_class(indices, var) -> str:
    """How a buffer access depends on iter `var`: 'none', 'contig', 'strided',
    'plain' (only as a whole non-last index of a plain-var access), 'bad'."""
    uses = [i for i, idx in enumerate(indices) if _uses_var(idx, var)]
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
        if len(coeff) == 2 and _const(coeff[0]) == 1:
            return "contig"
        return "strided"
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
    _collect_loads(body.value, loads)
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
                tvm.ir.structural_equal(a, b) for a, b in zip(acc, first)
            ):
                return None
        result.append((ridx, buf, first))
    return result


_COST = {"none": 0, "contig": 0, "plain": 1, "strided": 2}


def rule_contraction(sch: Schedule, block: SBlockRV) -> bool:  # pylint: disable=too-many-locals,too-many-branches,too-many-statements
    """Register-tiled reduction (matmul, batch/NT matmul, conv, column sums).

    Picks a constant-extent spatial iter J to vectorise (every input that
    depends on J must be contiguous/strided in J, or a plain-index operand
    that gets repacked so J is innermost) and, when possible, a second
    spatial iter I whose inputs do not depend on J (register reuse).
    Returns False if the block does not fit (then rule_reduction applies).
    """
    stmt = sch.get(block)
    if len(stmt.writes) != 1 or not _is_reduction_block(sch, block):
        return False
    iters = _trivial_iters(sch, block)
    if iters is None:
        return False
    s_iters = [it for it in iters if it.kind == "S"]
    r_iters = [it for it in iters if it.kind == "R"]
    if not s_iters or not r_iters:
        return False
    reads = _reads_of(sch, block)
    if not reads:
        return False
    write_indices = list(stmt.writes[0].region)
    write_last = write_indices[-1].min if write_indices else None

    # --- choose J (vector axis) ---------------------------------------------
    best = None
    for it in s_iters:
        if it.const is None or it.const < 4:
            continue
        classes = [_index_class(idx, it.var) for _, _, idx in reads]
        if "bad" in classes:
            continue
        if all(c == "none" for c in classes):
            continue  # J must feed from some input (otherwise it is a broadcast)
        has_reuse = any(c == "none" for c in classes)
        if "plain" in classes and not has_reuse:
            continue  # repacking without reuse is just a transpose (softmax rows)
        cost = max(_COST[c] for c in classes)
        is_write_last = write_last is not None and isinstance(write_last, tirx.Var) and (
            write_last.same_as(it.var)
        )
        key = (cost, 0 if is_write_last else 1, -it.pos)
        if best is None or key < best[0]:
            best = (key, it, classes)
    if best is None:
        return False
    _, j_it, j_classes = best

    # --- choose I (register-tile rows) ---------------------------------------
    a_side = [idx for (_, _, idx), c in zip(reads, j_classes) if c == "none"]
    b_side = [idx for (_, _, idx), c in zip(reads, j_classes) if c != "none"]

    def _uses(idx_list, var):
        return any(_uses_var(e, var) for e in idx_list)

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
            0 if it.const is None or it.const >= ROW_TILE else 1,
            -it.pos,
        )
        if i_key is None or key < i_key:
            i_key, i_it = key, it

    # --- repack inputs whose J dim is not innermost ---------------------------
    for (ridx, buf, idx), cls in zip(reads, j_classes):
        if cls != "plain":
            continue
        jdim = next(d for d, e in enumerate(idx) if e.same_as(j_it.var))
        ndim = len(idx)
        order = [d for d in range(ndim) if d != jdim] + [jdim]
        pack = sch.cache_read(block, ridx, "global")
        sch.transform_layout(
            block,
            ("read", ridx),
            tirx.IndexMap.from_func(lambda *ax, _o=order: [ax[d] for d in _o], ndim=ndim),
        )
        rule_spatial(sch, pack)
        del buf

    # --- tile -----------------------------------------------------------------
    # loop handles are still valid (cache_read/transform_layout do not touch them)
    vj = _pick_factor(j_it.const, (VEC_LANES, 8, 4)) or j_it.const
    if vj > 4 * VEC_LANES:
        vj = VEC_LANES
    j_outer, j_inner = sch.split(j_it.loop, [None, vj])
    if i_it is not None:
        vi = ROW_TILE if i_it.const is None else (_pick_factor(i_it.const, (ROW_TILE, 3, 2)) or 1)
        i_outer, i_inner = sch.split(i_it.loop, [None, vi])
    else:
        i_outer = i_inner = None
    others = [it for it in sorted(s_iters, key=lambda t: t.pos) if it is not j_it and it is not i_it]
    outer = [it.loop for it in others] + [j_outer] + ([i_outer] if i_outer is not None else [])
    inner = [i_inner] if i_inner is not None else []
    inner.append(j_inner)
    r_loops = [it.loop for it in sorted(r_iters, key=lambda t: t.pos)]
    sch.reorder(*outer, *r_loops, *inner)

    # accumulate into a local register tile; fuse elementwise epilogues into the write-back
    wb = sch.cache_write(block, 0, "local")
    for consumer in sch.get_consumers(wb):
        try:
            sch.reverse_compute_inline(consumer)
        except Exception:  # pylint: disable=broad-except
            pass
    sch.reverse_compute_at(wb, outer[-1], preserve_unit_loops=True)
    _vectorize_innermost(sch, wb)
    # annotate before decompose_reduction: afterwards the update block is no
    # longer a "reduction block" and vectorize() refuses it
    if i_inner is not None:
        sch.unroll(i_inner)
    sch.vectorize(j_inner)
    outer_ext = [it.extent for it in others] + [j_it.const // vj if j_it.const % vj == 0 else None]
    if i_outer is not None:
        outer_ext.append(None)
    _parallel_outer(sch, outer, outer_ext)
    # last: after decomposition the update block is no longer a "reduction block"
    # and loop annotations (parallel/vectorize) are refused
    sch.decompose_reduction(block, r_loops[0])
    return True


# ----------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------
def _root_block(sch: Schedule) -> SBlockRV | None:
    try:
        return sch.get_sblock("root")
    except Exception:  # pylint: disable=broad-except
        pass
    body = sch.mod["main"].body
    if isinstance(body, s_tir.SBlockRealize):
        return sch.get_sblock(body.block.name_hint)
    return None


def _schedule_block(sch: Schedule, name: str) -> str | None:
    block = sch.get_sblock(name)
    if _is_spatial_block(sch, block):
        return "spatial" if rule_spatial(sch, block) else None
    if rule_contraction(sch, block):
        return "contraction"
    return "reduction" if rule_reduction(sch, block) else None


def schedule_prim_func(func: tirx.PrimFunc, stats: dict | None = None) -> tirx.PrimFunc:
    """Apply the rules to one PrimFunc. Never raises; returns `func` if unschedulable."""
    try:
        sch = Schedule(IRModule({"main": func}))
        root = _root_block(sch)
        if root is None:
            return func
        try:
            trial = sch.copy()
            rule_inline(trial, _root_block(trial))
            sch = trial
        except Exception:  # pylint: disable=broad-except
            logger.debug("inline failed", exc_info=True)
        names = [sch.get(b).name_hint for b in sch.get_child_blocks(_root_block(sch))]
        if len(set(names)) != len(names):
            return func
        for name in names:
            try:
                sch.get_sblock(name)
            except Exception:  # pylint: disable=broad-except
                continue  # inlined into an earlier block's schedule (epilogue)
            trial = sch.copy()
            try:
                kind = _schedule_block(trial, name)
            except Exception as err:  # pylint: disable=broad-except
                logger.debug("cpu_basic: block %s left unscheduled: %s", name, err)
                kind = None
            if kind is not None:
                sch = trial
            if stats is not None:
                stats[kind or "unscheduled"] = stats.get(kind or "unscheduled", 0) + 1
        return sch.mod["main"]
    except Exception:  # pylint: disable=broad-except
        logger.debug("cpu_basic: function left unscheduled", exc_info=True)
        return func


def _is_scheduled(func: tirx.PrimFunc) -> bool:
    attrs = func.attrs
    return attrs is not None and "tirx.is_scheduled" in attrs and bool(attrs["tirx.is_scheduled"])


def schedule_pass(target: tvm.target.Target | None = None, stats: dict | None = None):
    """IRModule pass scheduling every PrimFunc without ``tirx.is_scheduled``."""

    @tvm.transform.module_pass(opt_level=0, name="CPUBasicSchedule")
    def _pass(mod: IRModule, _ctx) -> IRModule:  # pylint: disable=unused-argument
        updates = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
                continue
            new = schedule_prim_func(func, stats)
            if new is not func:
                updates[gvar] = new.with_attr("tirx.is_scheduled", True)
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod

    del target
    return _pass


def pipeline(
    target: tvm.target.Target,
    dynamic_shapes: bool = False,
    stats: dict | None = None,
) -> tvm.transform.Pass:
    """Default Relax CPU pipeline + :func:`schedule_pass`.

    Parameters
    ----------
    target : the llvm target (also pass it to ``tvm.compile``).
    dynamic_shapes : drop ``RewriteDataflowReshape`` (fails on symbolic shapes).
    stats : optional dict filled with how many blocks each rule scheduled.
    """
    if isinstance(target, (str, dict)):
        target = tvm.target.Target(target)
    rp = relax.pipeline

    @tvm.transform.module_pass(opt_level=0, name="CPUBasicPipeline")
    def _pipeline(mod: IRModule, _ctx) -> IRModule:
        dataflow_lower = [
            p
            for p in _dataflow_lower_passes(target)
            if not (dynamic_shapes and p.info.name == "RewriteDataflowReshape")
        ]
        passes = (
            list(rp.library_dispatch_passes(target))
            + list(rp.legalize_passes(target))
            + dataflow_lower
            + [schedule_pass(target, stats)]
            + list(rp.finalize_passes(target))
        )
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def _dataflow_lower_passes(target: tvm.target.Target) -> list:
    """``relax.pipeline.dataflow_lower_passes``; in apache-tvm 0.27.0.post1 it raises
    AttributeError for llvm (``relax.backend.cpu_generic`` does not re-export it),
    so fall back to the submodule that defines it."""
    try:
        return list(relax.pipeline.dataflow_lower_passes(target))
    except AttributeError:
        from tvm.relax.backend.cpu_generic import (  # pylint: disable=import-outside-toplevel
            pipeline as cpu_pipeline,
        )

        return list(cpu_pipeline.dataflow_lower_passes(target))


def default_target(num_cores: int | None = None) -> tvm.target.Target:
    """llvm target for this host CPU (enables AVX2/AVX-512/FMA codegen)."""
    import os  # pylint: disable=import-outside-toplevel

    cfg = {"kind": "llvm", "num-cores": int(num_cores or os.cpu_count() or 1)}
    try:
        cfg["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
    except Exception:  # pylint: disable=broad-except
        pass
    return tvm.target.Target(cfg)

