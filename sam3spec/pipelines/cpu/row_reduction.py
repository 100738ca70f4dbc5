"""Rule: functions whose reductions all run along the innermost axis (softmax, layer_norm, row sums): dlight's
CPU Reduction (per-row compute_at, parallel rows, vectorised elementwise parts)."""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.ir import IRModule
from tvm.s_tir import Schedule

from sam3spec.pipelines.cpu.analysis import is_reduction_block, root_block
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
    from tvm.s_tir.dlight.cpu import Reduction  # pylint: disable=import-outside-toplevel

    with target:
        result = Reduction().apply(func, target, False)
    if isinstance(result, list):
        result = result[0] if result else None
    return result
