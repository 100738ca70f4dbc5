"""Tensor cores (wmma) for every float16 matmul on CUDA, with coalesced loads and a tile the target chooses.

dlight's MatmulTensorization (what dl.gpu.Matmul picks) fetches its tiles to shared memory along K, so a right
operand laid out K x N (a lifted ``linear`` weight, attention's V) is read with a stride of N per element,
uncoalesced. ``TensorCoreMatmul`` schedules as that rule does (same normal form C[S, I, J] += A[S, I, K] *
B[S, J, K], same intrinsics, same software pipeline) but fetches each operand along the axis contiguous in its
global buffer, and takes the warp tile, warps per block and K chunk as parameters (:func:`choose_tile`).
dl.gpu.Matmul also keeps matmuls with an extent <= 64 (attention's head dimension) off the tensor cores; this
rule takes them when every static extent is at least ``min_extent`` (padding a dimension to the block tile
then costs at most tile / min_extent in wasted work)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import TensorIntrin
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.gpu.base import GPUScheduleRule
from tvm.s_tir.dlight.gpu.matmul import (auto_inline_consumer_chain, auto_inline_producers, check_sm_version,
                                         get_in_out_dtypes, get_index_map, get_reduction_blocks)
from tvm.script import tirx as T
from tvm.tirx.analysis import undefined_vars

from sam3spec.pipelines import intrinsics

FRAGMENT = 16  # the wmma intrinsics' M, N and K
WARP = 32
VECTOR = 4     # float16 elements per thread per load


@dataclass(frozen=True)
class Tile:
    """A block of ``warps`` = (rows, cols) warps, each owning ``warp`` = (rows, cols) output elements, walking K
    in chunks of ``k``. dlight's MatmulTensorization is Tile((32, 32), (4, 4), 64)."""
    warp: tuple[int, int]
    warps: tuple[int, int]
    k: int
    stages: int = 0  # 0: copies staged through registers, double-buffered; n >= 2: cp.async, n tiles in flight

    def __post_init__(self):
        if any(v % FRAGMENT or v <= 0 for v in (*self.warp, self.k)) or any(v <= 0 for v in self.warps):
            raise ValueError(f"tensor core tile {self}: warp sizes and k must be positive multiples of {FRAGMENT}")

    @property
    def block(self) -> tuple[int, int]:
        return self.warp[0] * self.warps[0], self.warp[1] * self.warps[1]


# Measured on an H200 (float16 x float16 -> float32 + bias, SAM3's trunk shapes, 2026-12-01): dlight's tile with
# coalesced loads ran the 5184 x 1024 x {3072, 1024, 4736} and 5184 x 4736 x 1024 linears at 180-210 TFLOP/s
# (dlight's rule: 65-75 on the lifted K x N weights), best or within 8% of the best of 15 tiles; a 128 x 64 block
# of four 32 x 64 warps ran attention's P.V (N = 64) at 100 TFLOP/s (dlight's tile: 75) and Q.K^T (K = 64) at 68 (47).
# On an H100 (2026-12-07, each tile timed on random inputs): four 64 x 64 warps with stages=4 (cp.async) ran the
# trunk's linears in 18.7 ms per 128 calls against WIDE's 22.2, within 3% of the best of 14 tiles on each.
WIDE = Tile((32, 32), (4, 4), 64)
WIDE_ASYNC = Tile((64, 64), (2, 2), 32, stages=4)
NARROW = Tile((32, 64), (4, 1), 32)
ASYNC_COPY = "tirx.use_async_copy"  # the pass config that lowers a staged tile's copies to cp.async


def choose_tile(sizes: list, async_copy: bool = False) -> Tile:
    """The tile for extents I, J, K (an IntImm each, or symbolic): NARROW when J or K is at most 64, else
    WIDE_ASYNC where cp.async is on (`async_copy`), WIDE where not."""
    static = [int(e) if isinstance(e, tirx.IntImm) else None for e in sizes]
    if any(e is not None and e <= 64 for e in static[1:]):
        return NARROW
    return WIDE_ASYNC if async_copy else WIDE


def async_copy_safe(func: tirx.PrimFunc) -> bool:
    """Whether a cp.async tile may copy this matmul's operands: cp.async moves 16 bytes (8 float16) per thread,
    so every block reads its buffers at plain indices (no convolution's im2col gather: the trunk's 14 x 14 patch
    embedding raised cudaErrorMisalignedAddress on an H100, and the neck's convolutions made CUDA that nvcc
    refused, make_longlong4 with 64-bit indices) and each buffer's last extent is a multiple of 8."""
    sch = s_tir.Schedule(func)
    for block in (sch.get(b) for b in sch.get_child_blocks(get_root_block(sch))):  # unscheduled: all at the root
        for region in [*block.reads, *block.writes]:
            last = region.source.shape[-1]
            if not (isinstance(last, tirx.IntImm) and int(last) % 8 == 0):
                return False
        if not all(isinstance(r.min, (tirx.Var, tirx.IntImm)) for region in block.reads for r in region.region):
            return False
    return True


def async_copy_on() -> bool:
    """Whether the current PassContext lowers staged copies to cp.async (the target's pass_config sets it)."""
    return bool(tvm.transform.PassContext.current().config.get(ASYNC_COPY, False))


def matmul_form(func: tirx.PrimFunc, batch: bool = False) -> tuple[list, tuple[str, str]] | None:
    """The I, J, K extents (S, I, J, K with ``batch``) of a matmul in dlight's normal form
    C[S, I, J] += A[S, I, K] * B[S, J, K], and its (input, output) dtypes; None if it is not one."""
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
    return [iv.dom.extent for iv in sch.get(main).iter_vars[0 if batch else 1:]], dtypes


def _load_vars(block: tirx.SBlock) -> list:
    """The variables in the last index of the global buffer a (producer-inlined) copy block reads."""
    regions = [r for r in block.reads if r.source.scope() == "global"]
    return undefined_vars(regions[0].region[-1].min) if regions else []


LOAD_B_KJ = "sam3spec_wmma_load_16x16x16_f16_b_kj_shared_dyn"


@functools.cache
def _register_load_b_kj() -> str:
    """TVM's row-major wmma load of B, for a fragment block whose iterations run (J, K) while its buffers are
    [K, J] (a layout transform turns the buffers, not the block): the same implementation, the description's
    loops in that order. Registered (and its TVMScript parsed) once per process."""
    get_wmma_load_intrin = intrinsics.register().cuda.get_wmma_load_intrin

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (16, 16), "float16", align=64, offset_factor=16, scope="shared.dyn")
        C = T.match_buffer(c, (16, 16), "float16", align=64, offset_factor=16, scope="wmma.matrix_b")
        with T.sblock("root"):
            T.reads(A[0:16, 0:16])
            T.writes(C[0:16, 0:16])
            for j, k in T.grid(16, 16):
                with T.sblock("load"):
                    vj, vk = T.axis.remap("SS", [j, k])
                    C[vk, vj] = A[vk, vj]

    TensorIntrin.register(LOAD_B_KJ, desc, get_wmma_load_intrin(16, 16, 16, "float16", "shared.dyn", True, False)[1],
                          override=True)
    return LOAD_B_KJ


def _swap_last(s, j, k):  # [S, J, K] -> [S, K, J]: dlight's normal form keeps a batch axis S
    return s, k, j


class TensorCoreMatmul(GPUScheduleRule):
    """The tensor-core schedule for float16 x float16 -> float16 | float32 matmuls on CUDA (sm_70 and up) whose
    static extents are all >= ``min_extent``; declines (None) everything else, and any matmul it cannot
    tensorize, for the next rule."""

    def __init__(self, min_extent: int = 32, tile: Tile | None = None):
        self.min_extent, self.tile = min_extent, tile  # tile None: choose_tile per matmul

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "cuda" \
                or check_sm_version(str(target.attrs.get("arch", ""))) < 70 \
                or "dlight.do_not_tensorize" in func.attrs.keys():
            return None
        found = matmul_form(func)
        if found is None:
            return None
        sizes, (in_dtype, out_dtype) = found
        if in_dtype != "float16" or out_dtype not in ("float16", "float32"):
            return None
        if any(int(e) < self.min_extent for e in sizes if isinstance(e, tirx.IntImm)):
            return None
        tile = self.tile or choose_tile(sizes, async_copy_on() and async_copy_safe(func))
        for accumulate in ("float32", "float16"):
            try:
                return self._schedule(func, accumulate, tile)
            except Exception:  # pylint: disable=broad-except
                continue  # tensorize refused this accumulator: dlight's rule tries f32 then f16 likewise
        return None

    @staticmethod
    def _schedule(func, accumulate: str, tile: Tile) -> s_tir.Schedule:  # pylint: disable=too-many-locals
        get_wmma_intrin_group = intrinsics.register().cuda.get_wmma_intrin_group  # TVM's wmma intrinsics

        sch = s_tir.Schedule(func)
        main = get_reduction_blocks(sch, sch.get_child_blocks(get_root_block(sch)))[0]
        reindex = [sch.reindex(main, ("read", 0)), sch.reindex(main, ("read", 1)), sch.reindex(main, ("write", 0))]
        matmul_map, a_map, b_map, c_map = get_index_map(sch.get(main))
        sch.transform_layout(reindex[0], ("write", 0), a_map)
        sch.transform_layout(reindex[1], ("write", 0), b_map)
        sch.transform_layout(reindex[2], ("read", 0), c_map)
        sch.transform_block_layout(main, matmul_map)
        (block_m, block_n), warps = tile.block, tile.warps[0] * tile.warps[1]
        sch.pad_einsum(main, [1, block_m, block_n, tile.k])

        batch, i, j, k = sch.get_loops(main)
        i, i_inner = sch.split(i, [None, FRAGMENT])
        j, j_inner = sch.split(j, [None, FRAGMENT])
        k, k_inner = sch.split(k, [None, FRAGMENT])
        sch.reorder(i, j, k, i_inner, j_inner, k_inner)
        inner = main
        outer = sch.blockize(i_inner)
        i0, i1, i2, i3 = sch.split(i, [None, 1, tile.warps[0], tile.warp[0] // FRAGMENT])
        j0, j1, j2, j3 = sch.split(j, [1, None, tile.warps[1], tile.warp[1] // FRAGMENT])
        k0, k1 = sch.split(k, [None, tile.k // FRAGMENT])
        if tile.stages:  # A's and B's copies, then the fragments' pipelined loop (its prologue, body, epilogue):
            # cp.async keeps stages - 1 tiles in flight
            sch.annotate(k0, "software_pipeline_order", [0, 1, 2, 3, 4])
            sch.annotate(k0, "software_pipeline_stage", [0, 0] + [tile.stages - 1] * 3)
            sch.annotate(k0, "software_pipeline_async_stages", [0])
        else:
            sch.annotate(k0, "software_pipeline_order", [0, 3, 1, 4, 5, 2, 6])
            sch.annotate(k0, "software_pipeline_stage", [0, 0, 0, 0, 0, 1, 1])
        sch.annotate(k1, "software_pipeline_order", [0, 1, 2])
        sch.annotate(k1, "software_pipeline_stage", [0, 0, 1])
        sch.reorder(i0, j0, i1, j1, j2, i2, k0, k1, i3, j3)
        sch.bind(batch, "blockIdx.z")
        sch.bind(sch.fuse(i0, j0), "blockIdx.x")
        sch.bind(sch.fuse(i1, j1), "blockIdx.y")
        warp_loop = sch.fuse(j2, i2)
        sch.bind(warp_loop, "threadIdx.y")

        copies = []
        for operand in (0, 1):
            copies.append(sch.cache_read(outer, operand, "shared.dyn"))
            sch.compute_at(copies[-1], k0)
            auto_inline_producers(sch, copies[-1])
        fragments = [sch.cache_read(outer, 0, "wmma.matrix_a"), sch.cache_read(outer, 1, "wmma.matrix_b")]
        b_col_major = True  # B's tile is [J, K] in shared memory (wmma col_major), unless B is J-contiguous
        for operand, copy in enumerate(copies):
            rows, cols = sch.get_loops(copy)[-2:]
            block_vars = [iv.var for iv in sch.get(copy).iter_vars]
            if any(v.same_as(block_vars[-2]) for v in _load_vars(sch.get(copy))):
                # the global buffer is contiguous along the tile's rows (I for A, J for B): walk them inner
                if operand == 1:  # and keep B's tile [K, J] in shared memory and fragments (wmma row_major)
                    b_col_major = False
                    names = [sch.get(b).name_hint for b in (copy, fragments[1])]
                    sch.transform_layout(sch.get_sblock(names[1]), ("write", 0), _swap_last)
                    sch.transform_layout(sch.get_sblock(names[0]), ("write", 0), _swap_last)
                    copy, fragments[1] = (sch.get_sblock(n) for n in names)
                    rows, cols = sch.get_loops(copy)[-2:]
                sch.reorder(cols, rows)
                rows, cols = cols, rows
            fused = sch.fuse(rows, cols)
            _, ty, tx, vec = sch.split(fused, [None, warps, WARP, 2 * VECTOR if tile.stages else VECTOR])
            sch.bind(tx, "threadIdx.x")
            sch.bind(ty, "threadIdx.y")
            sch.vectorize(vec)
            sch.storage_align(copy, 0, axis=-2, factor=16, offset=8)
            if not tile.stages:
                sch.annotate(copy, "tirx.manifest_shared_memory_local_stage", 1)
                sch.annotate(copy, "double_buffer_scope", 0)
        for fragment in fragments:
            sch.compute_at(fragment, k1)
        staged = sch.cache_write(outer, 0, "shared.dyn")
        sch.storage_align(staged, 0, -2, 16, 4)
        store = sch.cache_write(outer, 0, "wmma.accumulator")
        sch.reverse_compute_at(store, warp_loop)
        sch.reverse_compute_at(staged, warp_loop)
        si, sj = sch.get_loops(store)[-2:]
        si0, si1 = sch.split(si, [None, FRAGMENT])
        sj0, sj1 = sch.split(sj, [None, FRAGMENT])
        sch.reorder(si0, sj0, si1, sj1)
        init = sch.get_child_blocks(sch.decompose_reduction(outer, k0))[0]

        intrin = get_wmma_intrin_group(load_scope="shared.dyn", store_scope="shared.dyn", in_dtype="float16",
                                       out_dtype=accumulate, trans_b=b_col_major)
        for fragment, name in zip(fragments, ("load_a", "load_b")):
            fi, fj = sch.get_loops(fragment)[-2:]
            fi0, fi1 = sch.split(fi, [None, FRAGMENT])
            fj0, fj1 = sch.split(fj, [None, FRAGMENT])
            sch.reorder(fi0, fj0, fi1, fj1)
            sch.unroll(fi0)
            sch.unroll(fj0)
            sch.tensorize(fi1, intrin[name] if b_col_major or name == "load_a" else _register_load_b_kj())
        sch.tensorize(sch.get_loops(init)[-2], intrin["init"])
        sch.tensorize(sch.get_loops(store)[-2], intrin["store"])
        sch.tensorize(sch.get_loops(inner)[-3], intrin["compute"])
        auto_inline_consumer_chain(sch, staged)
        _, tx, vec = sch.split(sch.fuse(*sch.get_loops(staged)[-2:]), [None, WARP, VECTOR])
        sch.bind(tx, "threadIdx.x")
        sch.vectorize(vec)
        return sch
