"""Loop and index analysis the CPU rules share: constant extents, block kinds, loops bound 1:1 to block iters,
tile sizes, the parallel and vector helpers, index maps that must not be composed."""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import Schedule
from tvm.s_tir.schedule import LoopRV, SBlockRV


_get_sblock_realize = tvm.get_global_func("s_tir.schedule.GetSBlockRealize")


# apache-tvm 0.27 moved TIR expression nodes into tvm.ir (BufferLoad -> TensorLoad)
_TensorLoad = tvm.ir.expr.TensorLoad


_Call = tvm.ir.expr.Call


_Expr = tvm.ir.expr.Expr


def const(expr) -> int | None:
    return int(expr.value) if isinstance(expr, tirx.IntImm) else None


def is_reduction_block(sch: Schedule, block: SBlockRV) -> bool:
    return any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(block).iter_vars)


def is_spatial_block(sch: Schedule, block: SBlockRV) -> bool:
    return all(iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(block).iter_vars)


def _vars_in(expr) -> list:
    """Free variables of a TIR expression."""
    return list(tirx.analysis.undefined_vars(expr))


def uses_var(expr, var) -> bool:
    return any(v.same_as(var) for v in _vars_in(expr))


_CHILD_FIELDS = (
    "a", "b", "value", "condition", "true_value", "false_value", "base", "stride", "body",
)


def collect_loads(expr, out: list) -> None:
    """Append every buffer load inside a TIR expression (the wheel has no Python
    TIR visitor; loads are ``tvm.ir.expr.TensorLoad`` with ``.source``/``.indices``)."""
    if isinstance(expr, _TensorLoad):
        out.append(expr)
        for idx in expr.indices:
            collect_loads(idx, out)
        return
    if isinstance(expr, _Call):
        for arg in expr.args:
            collect_loads(arg, out)
        return
    for field in _CHILD_FIELDS:
        child = getattr(expr, field, None)
        if isinstance(child, _Expr):
            collect_loads(child, out)


class _Iter:
    """One block iter bound 1:1 to one loop."""

    def __init__(self, var, kind: str, extent, loop: LoopRV, pos: int):
        self.var = var
        self.kind = kind  # "S" or "R"
        self.extent = extent
        self.const = const(extent)
        self.loop = loop
        self.pos = pos  # loop depth


def trivial_iters(sch: Schedule, block: SBlockRV) -> list[_Iter] | None:
    """Block iters if each is bound to exactly one of the block's loops, in any order.

    Returns None for opaque iters, compound bindings, predicates, or extra loops.
    """
    stmt = sch.get(block)
    realize = _get_sblock_realize(sch, block)
    if const(realize.predicate) != 1:
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
        if const(loop.min) != 0:
            return None
        used.add(idx)
        out.append(_Iter(iv.var, kind, iv.dom.extent, loops[idx], idx))
    return out


def _pick_factor(extent: int, candidates: tuple[int, ...]) -> int | None:
    for c in candidates:
        if extent % c == 0:
            return c
    return None


def tile_size(extent: int | None, want: int, min_exact: int, pow2: bool = False) -> int:
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


def lanes_for(extent: int | None, max_lanes: int = 16) -> int | None:
    """Vector width for a constant-extent innermost loop, or None."""
    if extent is None or extent < 2:
        return None
    if extent <= max_lanes:
        return extent
    return _pick_factor(extent, tuple(c for c in (64, 32, 16, 8, 4) if c <= max(max_lanes, 4)))


def total_const(extents) -> int | None:
    total = 1
    for e in extents:
        c = const(e) if not isinstance(e, int) else e
        if c is None:
            return None
        total *= c
    return total


def parallel_outer(sch: Schedule, loops: list[LoopRV], fuse: bool = True) -> LoopRV | None:
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
    total = total_const(extents)
    if total is not None and total < 2:
        return None
    sym = [i for i, e in enumerate(extents) if const(e) is None]
    if not fuse or len(loops) == 1 or len(sym) > 1:
        sch.parallel(loops[0])
        return loops[0]
    if sym and sym[0] != 0:
        loops = [loops[sym[0]]] + [lp for i, lp in enumerate(loops) if i != sym[0]]
        sch.reorder(*loops)
    fused = sch.fuse(*loops)
    sch.parallel(fused)
    return fused


def vectorize_innermost(sch: Schedule, block: SBlockRV, max_lanes: int = 16) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    inner = sch.get(loops[-1])
    lanes = lanes_for(const(inner.extent), max_lanes)
    if lanes is None:
        return
    if lanes == const(inner.extent):
        sch.vectorize(loops[-1])
    else:
        _, vi = sch.split(loops[-1], [None, lanes])
        sch.vectorize(vi)


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


def unsafe_index(expr) -> bool:
    """floordiv/floormod whose dividend has a negative variable term.

    apache-tvm 0.27 miscompiles these: FlattenBuffer's simplifier rewrites
    ``(6 - v) % 7`` to ``v % -7 * -1`` (drops the constant), so e.g. a flip
    inlined into a tile/repeat reads the wrong elements.
    """
    if isinstance(expr, _DIV_NODES) and _has_negative_term(expr.a):
        return True
    if isinstance(expr, _TensorLoad):
        return any(unsafe_index(i) for i in expr.indices)
    if isinstance(expr, _Call):
        return any(unsafe_index(a) for a in expr.args)
    return any(
        isinstance(getattr(expr, f, None), _Expr) and unsafe_index(getattr(expr, f))
        for f in _CHILD_FIELDS
    )


def block_has_unsafe_index(sch: Schedule, block: SBlockRV) -> bool:
    body = sch.get(block).body
    if not isinstance(body, tirx.BufferStore):
        return True  # not a simple store: do not judge, do not inline into it
    return unsafe_index(body.value) or any(unsafe_index(i) for i in body.indices)


def root_block(sch: Schedule) -> SBlockRV | None:
    try:
        return sch.get_sblock("root")
    except Exception:  # pylint: disable=broad-except
        pass
    body = sch.mod["main"].body
    if isinstance(body, s_tir.SBlockRealize):
        return sch.get_sblock(body.block.name_hint)
    return None
