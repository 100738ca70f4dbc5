"""Basic CPU schedule pipeline: the stock TVM Relax CPU build leaves every TIR loop nest unscheduled (serial, scalar), ~100x slower than PyTorch.

In apache-tvm 0.27 ``tvm.compile(mod, target=llvm)`` lowers every legalized
operator to a naive loop nest: no tiling, no vectorisation, no threads (a
1024x1024x4736 linear ran at ~1.3 GFLOP/s against 100-300 for PyTorch on 2 cores).
dlight's CPU rules have no matmul rule and MetaSchedule segfaults in this
wheel, so this module ships a small deterministic hand schedule instead. It
aims at robust, not optimal: within a few x of PyTorch on matmul/conv-heavy
graphs, and never failing a build.

Public API
----------
``pipeline(target, dynamic_shapes=False, stats=None, schedule=True, verify=True, conv_transpose_as_matmul=True)``
    ``tvm.compile(mod, target=target, relax_pipeline=pipeline(target))``. The
    stock CPU Relax pipeline assembled from ``tvm.relax.pipeline`` pieces
    (library dispatch -> legalize + FuseOps/FuseTIR -> dataflow lowering ->
    finalize) with :func:`schedule_pass` between dataflow lowering and
    finalize (after RewriteDataflowReshape, so reshape detection still sees
    unscheduled TIR). ``dynamic_shapes=True`` drops
    ``RewriteDataflowReshape`` (fails with "padding factor ... is not
    divisible" on some symbolic reshapes). ``conv_transpose_as_matmul``
    (default on, exact) legalizes stride == kernel transposed convs without
    TOPI's zero-dilated input (:func:`conv_transpose_legalize_map`).
    ``stats`` (a dict) collects per-rule block counts, ``errors`` and ``fallback``.
``schedule_pass(target=None, stats=None, verify=True)``
    The IRModule pass alone: schedules every PrimFunc not marked
    ``tirx.is_scheduled``; each result is test-lowered and falls back to a
    safe schedule, then to the unscheduled function, if lowering fails.
``schedule_prim_func(func, cfg=None, stats=None, fname="main", target=None)``
    One PrimFunc; returns it unchanged when nothing applies. Never raises.
A target without ``mcpu`` (``{"kind": "llvm"}``) is generic x86-64 (SSE2, no FMA): ~3x slower matmuls;
the manifests name ``host`` (resolved by runtime.compile.tvm_target to the compiling CPU).

Rules (one function each)
-------------------------
* :func:`rule_row_reductions` (whole function) - functions whose reductions all
  run along the innermost axis (softmax, layer_norm, row sums): dlight's CPU
  ``Reduction`` rule (per-row compute_at, parallel rows, vectorised
  elementwise parts).
* :func:`rule_inline` - compute-inline spatial blocks whose consumers are all
  spatial (GELU chains, reshape -> transpose chains); producers of
  reductions (pad, transpose, reshape before a matmul/conv) stay materialised.
* :func:`rule_contraction` - reduction blocks with a vectorisable spatial axis
  J: matmul, batch matmul, NT matmul, linear + bias + activation, attention
  q@k^T and p@v, conv2d (3x3, 1x1, strided/patch), depthwise conv,
  conv_transpose, pooling, column reductions. Register tile ``row_tile x
  vec_lanes``: ``[outer spatial, J/vj, I/vi] (fused, parallel) x reduction x
  [I%vi (unrolled), J%vj (vectorised)]``, accumulating in a local tile whose
  write-back absorbs the elementwise epilogue; operands that are not
  contiguous along J (NT matmul, conv weights) or that would be read with a
  power-of-two stride are repacked into K x vj panels first.
* :func:`rule_reduction` - any other reduction: spatial loops outermost, fused,
  parallel; the reduction loop stays serial.
* :func:`rule_spatial` - injective blocks: outer loops fused and parallel,
  innermost constant loop vectorised; transposes tiled 16x16 first.

Before legalization (Relax level): :mod:`sam3spec.pipelines.attention` fuses
softmax(q k^T) v into one kernel (scheduled by ``attention.schedule``);
:mod:`sam3spec.pipelines.prepack` packs weight operands once in
``main_transform_params``; ``FastMathTransform`` and :func:`gelu_fast_erf_legalize_map`
vectorise exp / erf; :func:`patch_conv_legalize_map` and
:func:`conv_transpose_legalize_map` turn stride == kernel convolutions into contractions.

Every rule runs on a copy of the schedule: any error leaves that block as it
was (``stats["errors"]`` records it). Symbolic extents are split by constant
factors with tail predicates and never fused behind another loop (see
:func:`_parallel_outer`).
"""

from __future__ import annotations

import logging

import tvm
import tvm_ffi
from tvm import relax, s_tir, tirx
from tvm.ir import IRModule
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic_pipeline
from tvm.s_tir import Schedule
from tvm.s_tir.schedule import LoopRV, SBlockRV

from sam3spec.pipelines import attention, dataflow_lower_passes, plain_conv2d, prepack, static_shape

logger = logging.getLogger(__name__)

__all__ = [
    "pipeline",
    "schedule_pass",
    "schedule_prim_func",
    "conv_transpose_legalize_map",
    "lowers",
    "TileConfig",
    "rule_row_reductions",
    "rule_inline",
    "rule_contraction",
    "rule_reduction",
    "rule_spatial",
]

# Below this many (constant) iterations a loop nest is not worth a thread launch.
MIN_PARALLEL_EXTENT = 2048


class TileConfig:
    """Register tile of :func:`rule_contraction` and vector width of the other rules.

    ``col_tile`` elements along the vectorised axis (LLVM splits them into
    vector registers of ``vec_lanes``) x ``row_tile`` rows are accumulated in
    registers. Measured on a 2-core AVX-512 host, 5184x1024x4736 fp32 matmul,
    2 threads: 64x6 (24 zmm accumulators) 299 GFLOP/s, 32x6 197, 16x8 ~100;
    with AVX2 (16 ymm registers) 16x4.
    """

    def __init__(self, vec_lanes: int = 16, row_tile: int = 4, fuse: bool = True,
                 col_tile: int | None = None):
        self.vec_lanes = vec_lanes
        self.row_tile = row_tile
        self.col_tile = col_tile or vec_lanes
        self.fuse = fuse  # False: "safe" retry mode, parallelise outermost loops without fusing

    def safe(self) -> "TileConfig":
        """The fallback configuration used when a scheduled function fails to lower."""
        return TileConfig(self.vec_lanes, self.row_tile, fuse=False, col_tile=self.col_tile)

    @staticmethod
    def for_target(target: tvm.target.Target | None) -> "TileConfig":
        """Pick tiles from the target's CPU features (AVX-512 -> 6x64, else 4x16)."""
        try:
            if target is not None and tvm.target.codegen.target_has_features("avx512f", target):
                return TileConfig(16, 6, col_tile=64)
        except Exception:  # pylint: disable=broad-except
            pass
        return TileConfig(16, 4)

    def __repr__(self) -> str:
        return (f"TileConfig(vec_lanes={self.vec_lanes}, row_tile={self.row_tile}, "
                f"col_tile={self.col_tile}, fuse={self.fuse})")


_DEFAULT_CFG = TileConfig()

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


_CHILD_FIELDS = (
    "a", "b", "value", "condition", "true_value", "false_value", "base", "stride", "body",
)


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


def _tile_size(extent: int | None, want: int, min_exact: int, pow2: bool = False) -> int:
    """Tile for a loop: the whole loop if it is short, else the largest divisor in
    [min_exact, want], else `want` (the split then carries a tail predicate).

    ``pow2`` (vector tiles) first tries power-of-two divisors >= 4: odd vector
    widths are slow (24 split as 12 lanes ran a k=2 s=2 conv_transpose 5x
    slower than as 3 x 8 lanes on AVX2).
    """
    if extent is None:
        return want
    if pow2:
        cand = want
        while cand >= 4:
            if extent % cand == 0:
                return cand
            cand //= 2
    if extent <= want:
        return extent
    for cand in range(want, max(min_exact, 1) - 1, -1):
        if extent % cand == 0:
            return cand
    return want


def _lanes_for(extent: int | None, max_lanes: int = 16) -> int | None:
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


def _parallel_outer(sch: Schedule, loops: list[LoopRV], fuse: bool = True) -> LoopRV | None:
    """Fuse `loops` (a perfectly nested chain of spatial loops) and mark the result parallel.

    Fusing loops of symbolic extent gives index expressions like
    ``fused % (n*2+12) // 2`` that later TIR passes cannot prove divisible
    (InternalError "padding factor ... is not divisible" in the TIR lowering),
    so: one symbolic loop is moved outermost before fusing (the divisors then
    stay constant); with two or more, or ``fuse=False``, only the outermost
    loop is made parallel.
    """
    if not loops:
        return None
    extents = [sch.get(lp).extent for lp in loops]
    total = _total_const(extents)
    if total is not None and total < 2:
        return None
    sym = [i for i, e in enumerate(extents) if _const(e) is None]
    if not fuse or len(loops) == 1 or len(sym) > 1:
        sch.parallel(loops[0])
        return loops[0]
    if sym and sym[0] != 0:
        loops = [loops[sym[0]]] + [lp for i, lp in enumerate(loops) if i != sym[0]]
        sch.reorder(*loops)
    fused = sch.fuse(*loops)
    sch.parallel(fused)
    return fused


def _vectorize_innermost(sch: Schedule, block: SBlockRV, max_lanes: int = 16) -> None:
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
_DIV_NODES = (
    tvm.ir.prim.expr.FloorDiv,
    tvm.ir.prim.expr.FloorMod,
    tvm.ir.prim.expr.Div,
    tvm.ir.prim.expr.Mod,
)


def _has_negative_term(expr) -> bool:
    """Whether an index expression subtracts a variable term (c - v, v * -1, ...)."""
    if isinstance(expr, tvm.ir.prim.expr.Sub) and _vars_in(expr.b):
        return True
    if isinstance(expr, tvm.ir.prim.expr.Mul):
        for side in (expr.a, expr.b):
            if isinstance(side, tirx.IntImm) and side.value < 0:
                return True
    return any(
        isinstance(getattr(expr, f, None), _Expr) and _has_negative_term(getattr(expr, f))
        for f in ("a", "b")
    )


def _unsafe_index(expr) -> bool:
    """floordiv/floormod whose dividend has a negative variable term.

    apache-tvm 0.27 miscompiles these: FlattenBuffer's simplifier rewrites
    ``(6 - v) % 7`` to ``v % -7 * -1`` (drops the constant), so e.g. a flip
    inlined into a tile/repeat reads the wrong elements.
    """
    if isinstance(expr, _DIV_NODES) and _has_negative_term(expr.a):
        return True
    if isinstance(expr, _TensorLoad):
        return any(_unsafe_index(i) for i in expr.indices)
    if isinstance(expr, _Call):
        return any(_unsafe_index(a) for a in expr.args)
    return any(
        isinstance(getattr(expr, f, None), _Expr) and _unsafe_index(getattr(expr, f))
        for f in _CHILD_FIELDS
    )


def _block_has_unsafe_index(sch: Schedule, block: SBlockRV) -> bool:
    body = sch.get(block).body
    if not isinstance(body, tirx.BufferStore):
        return True  # not a simple store: do not judge, do not inline into it
    return _unsafe_index(body.value) or any(_unsafe_index(i) for i in body.indices)


def rule_inline(sch: Schedule, root: SBlockRV) -> int:
    """Compute-inline spatial blocks all of whose consumers are spatial blocks.

    Producers of reductions (pad, transpose, reshape feeding a matmul/conv)
    stay materialised so the hot reduction loop keeps simple indexing. An
    inline is also skipped when it would compose index maps into a
    floordiv/floormod of a negative term (see :func:`_unsafe_index`).
    Returns the number of blocks inlined.
    """
    inlined = 0
    rejected: set[str] = set()
    progress = True
    while progress:
        progress = False
        for block in sch.get_child_blocks(root):
            name = sch.get(block).name_hint
            if name in rejected or not _is_spatial_block(sch, block):
                continue
            consumers = sch.get_consumers(block)
            if not consumers or not all(_is_spatial_block(sch, c) for c in consumers):
                continue
            consumer_names = [sch.get(c).name_hint for c in consumers]
            trial = sch.copy()
            try:
                trial.compute_inline(trial.get_sblock(name))
                unsafe = any(
                    _block_has_unsafe_index(trial, trial.get_sblock(c)) for c in consumer_names
                )
            except Exception:  # pylint: disable=broad-except
                unsafe = True
            if unsafe:
                rejected.add(name)
                continue
            sch.compute_inline(block)
            inlined += 1
            progress = True
            break
    return inlined


def _transpose_pair(sch: Schedule, block: SBlockRV):
    """(r, w) iters if the block writes along w (innermost loop) but some input is
    contiguous along another iter r (a transpose / permute_dims), else None."""
    iters = _trivial_iters(sch, block)
    stmt = sch.get(block)
    if not iters or len(stmt.writes) != 1 or not stmt.writes[0].region:
        return None
    w_last = stmt.writes[0].region[-1].min
    w_users = [it for it in iters if _uses_var(w_last, it.var)]
    if len(w_users) != 1 or w_users[0].pos != len(iters) - 1:
        return None
    w_it = w_users[0]
    if w_it.const is None or w_it.const < 8:
        return None
    for region in stmt.reads:
        if not region.region:
            continue
        r_last = region.region[-1].min
        if not isinstance(r_last, tirx.Var):
            continue
        r_it = next((it for it in iters if it.var.same_as(r_last)), None)
        if r_it is None or r_it is w_it or r_it.const is None or r_it.const < 8:
            continue
        return r_it, w_it
    return None


def _rule_transpose(sch: Schedule, block: SBlockRV, cfg: TileConfig) -> bool:
    """Tile a transpose 16x16 so both the gathered reads and the vector writes stay in L1."""
    pair = _transpose_pair(sch, block)
    if pair is None:
        return False
    r_it, w_it = pair
    iters = sorted(_trivial_iters(sch, block), key=lambda it: it.pos)
    r_it, w_it = iters[r_it.pos], iters[w_it.pos]
    tile_r = _tile_size(r_it.const, cfg.vec_lanes, cfg.vec_lanes // 2)
    tile_w = _tile_size(w_it.const, cfg.vec_lanes, cfg.vec_lanes // 2)
    r_o, r_i = sch.split(r_it.loop, [None, tile_r])
    w_o, w_i = sch.split(w_it.loop, [None, tile_w])
    others = [it for it in iters if it is not r_it and it is not w_it]
    sch.reorder(*[it.loop for it in others], r_o, w_o, r_i, w_i)
    total = _total_const([it.extent for it in iters])
    if total is None or total >= MIN_PARALLEL_EXTENT:
        _parallel_outer(sch, [it.loop for it in others] + [r_o, w_o], cfg.fuse)
    sch.vectorize(w_i)
    return True


def rule_spatial(sch: Schedule, block: SBlockRV, cfg: TileConfig = _DEFAULT_CFG) -> bool:
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
    inner_c = _const(extents[-1])
    lanes = _lanes_for(inner_c, cfg.vec_lanes)
    vec_loop = None
    if lanes is not None:
        if lanes == inner_c:
            outer, vec_loop = loops[:-1], loops[-1]
        else:
            lo, vec_loop = sch.split(loops[-1], [None, lanes])
            outer = loops[:-1] + [lo]
    else:
        outer = loops
    total = _total_const(extents)
    if outer and (total is None or total >= MIN_PARALLEL_EXTENT):
        _parallel_outer(sch, outer, cfg.fuse)
    if vec_loop is not None:
        sch.vectorize(vec_loop)
    return True


def rule_reduction(sch: Schedule, block: SBlockRV, cfg: TileConfig = _DEFAULT_CFG) -> bool:
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
        _parallel_outer(sch, [it.loop for it in s_iters], cfg.fuse)
    return True


def _panel_width(outer, inner, var) -> int | None:
    """c if (outer, inner) is (var // c, var % c): a pre-packed panel operand (prepack.packed_matmul)."""
    if (isinstance(outer, tvm.ir.prim.expr.FloorDiv) and isinstance(inner, tvm.ir.prim.expr.FloorMod)
            and outer.a.same_as(var) and inner.a.same_as(var)):
        c = _const(outer.b)
        return c if c is not None and c == _const(inner.b) else None
    return None


def _index_class(indices, var) -> str:
    """How a buffer access depends on iter `var`: 'none', 'contig', 'strided',
    'plain' (only as a whole non-last index of a plain-var access), 'panel'
    ([var // c, ..., var % c]: already packed), 'bad'."""
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


def _contraction_plan(sch: Schedule, block: SBlockRV, cfg: TileConfig):
    """Choose the axes of :func:`rule_contraction` without touching the schedule.

    Returns None if the block has no usable vector axis, else a dict with
    ``j`` (vector axis), ``i`` (register-row axis or None), ``classes`` (how
    each input depends on J), ``reads``, ``s_iters``, ``r_iters``.
    """
    stmt = sch.get(block)
    if len(stmt.writes) != 1 or not _is_reduction_block(sch, block):
        return None
    iters = _trivial_iters(sch, block)
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
            0 if it.const is None or it.const >= cfg.row_tile else 1,
            -it.pos,
        )
        if i_key is None or key < i_key:
            i_key, i_it = key, it
    return {
        "j": j_it,
        "i": i_it,
        "classes": j_classes,
        "reads": reads,
        "b_side": b_side,
        "s_iters": s_iters,
        "r_iters": r_iters,
    }


def rule_contraction(sch: Schedule, block: SBlockRV, cfg: TileConfig = _DEFAULT_CFG) -> bool:  # pylint: disable=too-many-locals
    """Register-tiled reduction (matmul, batch/NT matmul, conv, column sums).

    Picks a spatial iter J to vectorise (every input that depends on J must be
    contiguous/strided in J, or a plain-index operand that gets repacked so J
    is innermost; constant extents preferred) and, when possible, a second
    spatial iter I whose inputs do not depend on J (register reuse).
    Returns False if the block does not fit (then rule_reduction applies).
    """
    plan = _contraction_plan(sch, block, cfg)
    if plan is None:
        return False
    j_it, i_it, j_classes = plan["j"], plan["i"], plan["classes"]
    reads = plan["reads"]
    s_iters, r_iters = plan["s_iters"], plan["r_iters"]

    # --- repack J-dependent operands into contiguous K x vj panels ------------
    vj = _tile_size(j_it.const, cfg.col_tile, cfg.vec_lanes // 4, pow2=True)
    for (_, _, idx), cls in zip(reads, j_classes):
        if cls == "panel":  # the tile is the panel: j // c and j % c become the split loops
            vj = _panel_width(next(e for e in idx[:-1] if _uses_var(e, j_it.var)), idx[-1], j_it.var)
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
            reuse = _total_const(
                [it.extent for it in s_iters if not any(_uses_var(e, it.var) for e in idx)]
            )
            if reuse is not None and reuse < 64:
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
        vi = _tile_size(i_it.const, cfg.row_tile, max(cfg.row_tile // 2, 1))
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
    _vectorize_innermost(sch, wb, cfg.vec_lanes)
    # annotate before decompose_reduction: afterwards the update block is no
    # longer a "reduction block" and vectorize() refuses it
    if i_inner is not None:
        sch.unroll(i_inner)
    sch.vectorize(j_inner)
    _parallel_outer(sch, outer, cfg.fuse)
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


def _schedule_block(sch: Schedule, name: str, cfg: TileConfig) -> str | None:
    block = sch.get_sblock(name)
    if any(_const(sch.get(lp).extent) == 0 for lp in sch.get_loops(block)):
        return "empty"  # zero-trip loop nest (e.g. an empty slice): nothing to schedule
    if _is_spatial_block(sch, block):
        return "spatial" if rule_spatial(sch, block, cfg) else None
    if rule_contraction(sch, block, cfg):
        return "contraction"
    return "reduction" if rule_reduction(sch, block, cfg) else None


def rule_row_reductions(
    func: tirx.PrimFunc, target: tvm.target.Target | None, cfg: TileConfig = _DEFAULT_CFG
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
    root = _root_block(sch)
    if root is None:
        return None
    blocks = sch.get_child_blocks(root)
    reductions = [b for b in blocks if _is_reduction_block(sch, b)]
    if not reductions or any(_contraction_plan(sch, b, cfg) is not None for b in reductions):
        return None
    from tvm.s_tir.dlight.cpu import Reduction  # pylint: disable=import-outside-toplevel

    with target:
        result = Reduction().apply(func, target, False)
    if isinstance(result, list):
        result = result[0] if result else None
    return result


def _record_error(stats: dict | None, where: str, err: Exception) -> None:
    """stats["errors"] gets `where: Type: last line of the message` (TVM's errors print the whole IR)."""
    if stats is not None:
        msg = str(err).strip().splitlines()
        stats.setdefault("errors", []).append(f"{where}: {type(err).__name__}: {msg[-1] if msg else ''}")


def schedule_prim_func(
    func: tirx.PrimFunc,
    cfg: TileConfig | None = None,
    stats: dict | None = None,
    fname: str = "main",
    target: tvm.target.Target | None = None,
) -> tirx.PrimFunc:
    """Apply the rules to one PrimFunc. Never raises; returns `func` if unschedulable.

    ``stats`` (optional dict) counts blocks per rule (``row_reduction``, ``spatial``,
    ``contraction``, ``reduction``, ``empty``, ``unscheduled``) and lists rule
    errors under ``errors``. ``target`` enables :func:`rule_row_reductions`.
    """
    cfg = cfg or _DEFAULT_CFG
    if func.attrs is not None and attention.ATTR in func.attrs:
        try:
            sch = Schedule(IRModule({"main": func}))
            attention.schedule(sch, cfg.vec_lanes)
            if stats is not None:
                stats["attention"] = stats.get("attention", 0) + 1
            return sch.mod["main"]
        except Exception as err:  # pylint: disable=broad-except
            _record_error(stats, f"{fname}/attention", err)
    try:
        sch = Schedule(IRModule({"main": func}))
        root = _root_block(sch)
        if root is None:
            return func
        try:
            row = rule_row_reductions(func, target, cfg)
        except Exception:  # pylint: disable=broad-except
            logger.debug("cpu_basic: row-reduction rule failed", exc_info=True)
            row = None
        if row is not None:
            if stats is not None:
                n_blocks = len(sch.get_child_blocks(root))
                stats["row_reduction"] = stats.get("row_reduction", 0) + n_blocks
            return row.mod["main"]
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
                kind = _schedule_block(trial, name, cfg)
            except Exception as err:  # pylint: disable=broad-except
                logger.debug("cpu_basic: block %s left unscheduled: %s", name, err)
                kind = None
                _record_error(stats, f"{fname}/{name}", err)
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


def lowers(func: tirx.PrimFunc, target: tvm.target.Target) -> bool:
    """Whether `func` gets through the default TIR lowering (no LLVM codegen)."""
    try:
        mod = IRModule({"main": func.with_attr("global_symbol", "main")})
        host = target.host if target.host is not None else target
        with target:
            mod = tirx.transform.BindTarget(target.with_host(host))(mod)
            lower, finalize_host, _ = tirx.get_tir_pipeline("default")
            finalize_host()(lower(mod))
        return True
    except Exception:  # pylint: disable=broad-except
        logger.debug("cpu_basic: lowering check failed", exc_info=True)
        return False


def schedule_pass(
    target: tvm.target.Target | None = None, stats: dict | None = None, verify: bool = True
):
    """IRModule pass scheduling every PrimFunc without ``tirx.is_scheduled``.

    With ``verify`` (default) every scheduled PrimFunc is run through the TIR
    lowering passes; if that fails it is rescheduled in safe mode (no loop
    fusion) and, if that fails too, left unscheduled (stats["fallback"] lists them).
    """

    @tvm.transform.module_pass(opt_level=0, name="CPUBasicSchedule")
    def _pass(mod: IRModule, _ctx) -> IRModule:  # pylint: disable=unused-argument
        tgt = target or tvm.target.Target.current(allow_none=True)
        cfg = TileConfig.for_target(tgt)
        updates = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
                continue
            name = gvar.name_hint
            new = schedule_prim_func(func, cfg, stats, name, tgt)
            if new is func:
                continue
            if verify and tgt is not None and not lowers(new, tgt):
                new = schedule_prim_func(func, cfg.safe(), None, name)
                ok = new is not func and lowers(new, tgt)
                if stats is not None:
                    stats.setdefault("fallback", []).append(
                        f"{name}: {'safe mode' if ok else 'unscheduled'}"
                    )
                if not ok:
                    continue
            updates[gvar] = new.with_attr("tirx.is_scheduled", True)
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod

    return _pass


def conv_transpose_legalize_map() -> dict:
    """``LegalizeOps`` override for ``nn.conv2d_transpose`` with stride == kernel
    size, no padding/dilation/groups (SAM3's FPN upsampling, k=2 s=2).

    TOPI lowers every transposed conv as a zero-dilated input + padded conv,
    so for k == s three quarters of the multiply-adds hit inserted zeros. Here
    it is a plain contraction over input channels into (a, b) sub-pixel planes
    followed by a depth-to-space copy -- the same sums (minus the +0 terms),
    and a matmul-shaped block for :func:`rule_contraction`. Anything else
    keeps the stock legalization.
    """
    from tvm import te  # pylint: disable=import-outside-toplevel

    op_name = "relax.nn.conv2d_transpose"
    default = tvm.ir.Op.get(op_name).get_attr("FLegalize")

    def _legalize(bb, call):
        attrs = call.attrs
        kshape = static_shape(call.args[1])
        simple = (
            kshape is not None
            and plain_conv2d(attrs, "IOHW")
            and [int(v) for v in attrs.strides] == kshape[2:]
            and all(int(v) == 0 for v in attrs.output_padding)
        )
        if not simple:
            return default(bb, call)
        out_dtype = str(call.ty.dtype)
        kh, kw = kshape[2], kshape[3]

        def _te(data, kernel):
            n, c, h, w = data.shape
            o = kernel.shape[1]
            # weights as [KH, KW, I, O] and planes with the output channel innermost: the register
            # tile runs along O (512 or 256 wide: 64-lane tiles), not along the 72- or 144-wide rows
            # (8-lane tiles, 90 GFLOP/s on the 1008x1008 neck)
            kernel_t = te.compute(
                (kh, kw, c, o), lambda a, e, i, f: kernel[i, f, a, e], name="kernel_hwio"
            )
            rc = te.reduce_axis((0, c), name="rc")
            planes = te.compute(
                (n, kh, kw, h, w, o),
                lambda b, a, e, y, x, f: te.sum(
                    data[b, rc, y, x].astype(out_dtype) * kernel_t[a, e, rc, f].astype(out_dtype),
                    axis=rc,
                ),
                name="conv2d_transpose_planes",
            )
            return te.compute(
                (n, o, h * kh, w * kw),
                lambda b, f, y, x: planes[b, y % kh, x % kw, y // kh, x // kw, f],
                name="depth_to_space",
            )

        return bb.call_te(_te, call.args[0], call.args[1], primfunc_name_hint="conv2d_transpose")

    return {op_name: _legalize}


def patch_conv_legalize_map() -> dict:
    """``LegalizeOps`` override for ``nn.conv2d`` with stride == kernel size, or a kernel as large as the
    input, no padding, dilation or groups (a ViT patch embedding, 14x14 stride 14; the geometry
    encoder's 7x7 box pooling): patches [N, OH*OW, C*KH*KW] times weight rows
    [O, C*KH*KW] -- a matmul for :func:`rule_contraction` -- then an NCHW copy. TOPI's direct conv
    loop nest (input window inner) ran SAM3's 1008x1008 patch embedding in 1.6 s; anything else keeps
    the stock legalization."""
    from tvm import te  # pylint: disable=import-outside-toplevel

    op_name = "relax.nn.conv2d"
    default = tvm.ir.Op.get(op_name).get_attr("FLegalize")

    def _legalize(bb, call):
        attrs = call.attrs
        kshape = static_shape(call.args[1])
        dshape = static_shape(call.args[0], skip=1)  # the batch may be symbolic
        simple = (
            kshape is not None and dshape is not None and plain_conv2d(attrs, "OIHW")
            # stride == kernel, or one window covering the whole input (the stride does not matter)
            and ([int(v) for v in attrs.strides] == kshape[2:] or dshape[1:] == kshape[2:])
            and kshape[2] * kshape[3] > 1 and dshape[1] % kshape[2] == 0 and dshape[2] % kshape[3] == 0
        )
        if not simple:
            return default(bb, call)
        out_dtype = str(call.ty.dtype)
        kh, kw = kshape[2], kshape[3]

        def _te(data, kernel):
            n, c, h, w = data.shape
            o = kernel.shape[0]
            oh, ow, r = h // kh, w // kw, c * kh * kw
            patches = te.compute(
                (n, oh * ow, r),
                lambda b, p, q: data[b, q // (kh * kw), p // ow * kh + q // kw % kh, p % ow * kw + q % kw],
                name="patches",
            )
            rows = te.compute((o, r), lambda f, q: kernel[f, q // (kh * kw), q // kw % kh, q % kw],
                              name="weight_rows")
            rq = te.reduce_axis((0, r), name="rq")
            product = te.compute(
                (n, oh * ow, o),
                lambda b, p, f: te.sum(patches[b, p, rq].astype(out_dtype) * rows[f, rq].astype(out_dtype),
                                       axis=rq),
                name="patch_matmul",
            )
            return te.compute((n, o, oh, ow), lambda b, f, y, x: product[b, y * ow + x, f], name="patch_nchw")

        return bb.call_te(_te, call.args[0], call.args[1], primfunc_name_hint="patch_conv2d")

    return {op_name: _legalize}


def gelu_fast_erf_legalize_map() -> dict:
    """``LegalizeOps`` override for ``nn.gelu`` (erf form) with TOPI's ``fast_erf``: LLVM lowers
    ``tir.erf`` to a scalar ``erff`` call per element (no vectorisation); ``fast_erf`` is a clamped
    rational polynomial (Eigen's) that vectorises, max abs error ~1e-7 in fp32."""
    from tvm import te, topi  # pylint: disable=import-outside-toplevel

    op_name = "relax.nn.gelu"
    default = tvm.ir.Op.get(op_name).get_attr("FLegalize")

    def _legalize(bb, call):
        if str(call.ty.dtype) != "float32":
            return default(bb, call)

        def _te(x):
            erf = topi.fast_erf(topi.multiply(x, 0.5**0.5))
            return te.compute(x.shape, lambda *i: x(*i) * (0.5 + erf(*i) * 0.5), name="gelu")

        return bb.call_te(_te, call.args[0], primfunc_name_hint="gelu")

    return {op_name: _legalize}


def pipeline(
    target: tvm.target.Target,
    dynamic_shapes: bool = False,
    stats: dict | None = None,
    schedule: bool = True,
    verify: bool = True,
    conv_transpose_as_matmul: bool = True,
    patch_conv_as_matmul: bool = True,
    prepack_weights: bool = True,
    fast_math: bool = True,
    fuse_attention: bool = True,
) -> tvm.transform.Pass:
    """Default Relax CPU pipeline + :func:`schedule_pass`.

    Parameters
    ----------
    target : the llvm target (also pass it to ``tvm.compile``).
    dynamic_shapes : drop ``RewriteDataflowReshape`` (fails on symbolic shapes).
    stats : optional dict filled with how many blocks each rule scheduled.
    schedule : False gives the same pipeline without the scheduling pass (A/B checks).
    verify : check that each scheduled PrimFunc lowers, else fall back (see schedule_pass).
    conv_transpose_as_matmul : legalize stride == kernel transposed convs without
        the zero-dilated input (:func:`conv_transpose_legalize_map`); exact.
    patch_conv_as_matmul : stride == kernel convs as patches x weight rows
        (:func:`patch_conv_legalize_map`); exact up to summation order.
    prepack_weights : weight matmuls read ``col_tile``-wide panels made once by
        ``main_transform_params`` (:mod:`sam3spec.pipelines.prepack`); exact.
    fast_math : ``exp`` (softmax) and ``erf`` (GELU) as vectorisable polynomials
        (``FastMathTransform``, :func:`gelu_fast_erf_legalize_map`) instead of scalar
        libm calls per element; relative error ~1e-6.
    fuse_attention : softmax(q k^T) v as one kernel per block of query rows
        (:mod:`sam3spec.pipelines.attention`).
    """
    if isinstance(target, (str, dict)):
        target = tvm.target.Target(target)
    rp = relax.pipeline

    @tvm.transform.module_pass(opt_level=0, name="CPUBasicPipeline")
    def _pipeline(mod: IRModule, _ctx) -> IRModule:
        # relax.pipeline.dataflow_lower_passes raises AttributeError for llvm in apache-tvm 0.27.0.post1
        # (relax.backend.cpu_generic does not re-export it): take them from the module that defines them.
        dataflow_lower = dataflow_lower_passes(cpu_generic_pipeline, target, dynamic_shapes)
        legalize = list(rp.legalize_passes(target))
        custom = {}
        if conv_transpose_as_matmul:
            custom.update(conv_transpose_legalize_map())
        if patch_conv_as_matmul:
            custom.update(patch_conv_legalize_map())
        if fast_math:
            custom.update(gelu_fast_erf_legalize_map())
        if custom:
            legalize = [
                relax.transform.LegalizeOps(customize_legalize_map=custom)
                if p.info.name == "LegalizeOps"
                else p
                for p in legalize
            ]
        packing = [prepack.pack_weights(TileConfig.for_target(target).col_tile, stats), *prepack.lift()]
        passes = (
            (attention.fuse() if fuse_attention else [])
            + (packing if prepack_weights else [])
            + ([relax.transform.FastMathTransform()] if fast_math else [])
            + list(rp.library_dispatch_passes(target))
            + legalize
            + dataflow_lower
            + ([schedule_pass(target, stats, verify)] if schedule else [])
            + list(rp.finalize_passes(target))
        )
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
