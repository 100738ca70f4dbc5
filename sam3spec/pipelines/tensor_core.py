"""Tensor cores for float16 matmuls with a dimension of 64 or less: attention's.

dl.gpu.Matmul gives a matmul dlight's MatmulTensorization (wmma) only when every static extent of I, J and K is
above 64, so the products with a head dimension of 64 or 32 (QK^T's K, P.V's J: SAM3's ViT attention, the
fusion encoder's and decoder's) run on its generic SIMT schedule. ``SmallDimTensorCore`` hands those to
MatmulTensorization too, when each extent is at least ``min_extent`` (padding a dimension to the rule's 128 x 128
x 64 tile then costs at most 128 / min_extent in wasted work on the tensor cores)."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.gpu.base import GPUScheduleRule
from tvm.s_tir.dlight.gpu.matmul import (MatmulTensorization, check_sm_version, get_in_out_dtypes,
                                         get_index_map, get_reduction_blocks)

DLIGHT_THRESHOLD = 64  # dl.gpu.Matmul's minimal_tensorize_threshold: an extent <= this declines tensor cores


def extents(func: tirx.PrimFunc) -> tuple[list, tuple[str, str]] | None:
    """The I, J, K extents of a matmul in dlight's normal form C[S, I, J] += A[S, I, K] * B[S, J, K], and its
    (input, output) dtypes; None if it is not one."""
    sch = s_tir.Schedule(func)
    blocks = get_reduction_blocks(sch, sch.get_child_blocks(get_root_block(sch)))
    if blocks is None or len(blocks) != 1:
        return None
    main = blocks[0]
    maps = get_index_map(sch.get(main))
    if maps is None:
        return None
    dtypes = get_in_out_dtypes(sch.get(main))
    sch.transform_block_layout(main, maps[0])
    return [iv.dom.extent for iv in sch.get(main).iter_vars[1:]], dtypes


class SmallDimTensorCore(GPUScheduleRule):
    """MatmulTensorization for the float16 matmuls that dl.gpu.Matmul keeps off the tensor cores (an extent
    <= 64) and whose static extents are all >= min_extent; declines (None) everything else."""

    def __init__(self, min_extent: int = 32):
        self.min_extent = min_extent

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "cuda" \
                or check_sm_version(str(target.attrs.get("arch", ""))) < 70:
            return None
        found = extents(func)
        if found is None:
            return None
        sizes, (in_dtype, out_dtype) = found
        if in_dtype != "float16" or out_dtype not in ("float16", "float32"):
            return None
        static = [int(e) for e in sizes if isinstance(e, tirx.IntImm)]
        if not any(e <= DLIGHT_THRESHOLD for e in static) or any(e < self.min_extent for e in static):
            return None  # dl.gpu.Matmul tensorizes it already, or it is too small to pay for the padding
        return MatmulTensorization().apply(func, target, tunable)
