"""Rule: compute-inline spatial blocks whose consumers are all spatial (GELU chains, reshape -> transpose chains);
producers of reductions stay materialised, so the hot loop keeps simple indexing."""

from __future__ import annotations

from tvm.s_tir import Schedule
from tvm.s_tir.schedule import SBlockRV

from sam3spec.pipelines.cpu.analysis import block_has_unsafe_index, is_spatial_block


def rule_inline(sch: Schedule, root: SBlockRV) -> int:
    """Compute-inline spatial blocks all of whose consumers are spatial blocks.

    Producers of reductions (pad, transpose, reshape feeding a matmul/conv)
    stay materialised so the hot reduction loop keeps simple indexing. An
    inline is also skipped when it would compose index maps into a
    floordiv/floormod of a negative term (see :func:`unsafe_index`).
    Returns the number of blocks inlined.
    """
    inlined = 0
    rejected: set[str] = set()
    progress = True
    while progress:
        progress = False
        for block in sch.get_child_blocks(root):
            name = sch.get(block).name_hint
            if name in rejected or not is_spatial_block(sch, block):
                continue
            consumers = sch.get_consumers(block)
            if not consumers or not all(is_spatial_block(sch, c) for c in consumers):
                continue
            consumer_names = [sch.get(c).name_hint for c in consumers]
            trial = sch.copy()
            try:
                trial.compute_inline(trial.get_sblock(name))
                unsafe = any(
                    block_has_unsafe_index(trial, trial.get_sblock(c)) for c in consumer_names
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
