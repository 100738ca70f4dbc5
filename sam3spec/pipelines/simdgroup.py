"""Metal simdgroup-matrix matmuls with float16 operands and float32 accumulators, and their CUDA proxy.

TVM 0.27 registers simdgroup intrinsics for float16 x float16 -> float16 only, so dlight's MetalMatmul declines
the matmuls that ToMixedPrecision makes (float16 operands, float32 output) and they take the generic schedule.
MSL's ``simdgroup_multiply_accumulate`` takes half operands with float accumulators (MLX's GEMMs do so): this
module registers the missing intrinsics under sam3spec's names (TVM's own files are untouched) and schedules
with them as MetalMatmul does (``SimdgroupMatmul``).

``proxy=True`` gives the same schedule with every intrinsic implemented by its own TIR description and the
fragments in ``local`` memory, so that it compiles for CUDA: the tiling and indexing of what Metal runs are then
checked on an NVIDIA GPU, and only Apple's builtins stay unrun."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import TensorIntrin
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.gpu.base import GPUScheduleRule
from tvm.s_tir.dlight.gpu.matmul import (auto_inline_consumer_chain, auto_inline_producers, get_in_out_dtypes,
                                         get_index_map, get_reduction_blocks)
from tvm.script import tirx as T

_REGISTERED: set[bool] = set()


def get_simdgroup_index(buffer, stride, col: int, row: int):
    """Which 8x8 fragment of a simdgroup array a buffer view starts at (as tvm.s_tir.tensor_intrin.metal's, whose
    package import parses every target's intrinsics: minutes)."""
    return (buffer.elem_offset // stride // col) * (stride // row) + buffer.elem_offset % stride // row
FRAGMENT = {False: "metal.simdgroup", True: "local"}  # where a fragment lives: on Metal, or in the CUDA proxy


def _fill(scope: str, proxy: bool):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle) -> None:
        A = T.match_buffer(a, (8, 8), "float32", scope=scope, offset_factor=1)
        with T.sblock("root"):
            T.reads()
            T.writes(A[0:8, 0:8])
            for i, j in T.grid(8, 8):
                with T.sblock("init"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    A[vi, vj] = T.float32(0)

    @T.prim_func(s_tir=True)
    def impl(a: T.handle) -> None:
        d0, d1 = T.int32(), T.int32()
        A = T.match_buffer(a, (8, 8), "float32", scope=scope, strides=[d1, d0], offset_factor=1)
        with T.sblock("root"):
            T.reads()
            T.writes(A[0:8, 0:8])
            T.metal.make_filled_simdgroup_matrix(A.data, index=get_simdgroup_index(A, d1, 8, 8),
                                                 value=T.float32(0), col=8, row=8)

    return desc, desc if proxy else impl


def _load(scope: str, proxy: bool, transpose: bool):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (8, 8), "float16", align=64, scope="shared", offset_factor=1)
        C = T.match_buffer(c, (8, 8), "float16", align=64, scope=scope, offset_factor=1)
        with T.sblock("root"):
            T.reads(A[0:8, 0:8])
            T.writes(C[0:8, 0:8])
            for i, j in T.grid(8, 8):
                with T.sblock("load"):
                    vii, vjj = T.axis.remap("SS", [i, j])
                    if transpose:
                        C[vjj, vii] = A[vii, vjj]
                    else:
                        C[vii, vjj] = A[vii, vjj]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, c: T.handle) -> None:
        s0, s1, d0, d1 = T.int32(), T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (8, 8), "float16", align=64, scope="shared", strides=[s1, s0], offset_factor=1)
        C = T.match_buffer(c, (8, 8), "float16", align=64, scope=scope, strides=[d1, d0], offset_factor=1)
        with T.sblock("root"):
            T.reads(A[0:8, 0:8])
            T.writes(C[0:8, 0:8])
            T.metal.simdgroup_load(C.data, index=get_simdgroup_index(C, d1, 8, 8),
                                   ptr=A.access_ptr("r", ptr_type="float16"), stride=s1, col=8, row=8,
                                   transpose_matrix=transpose)

    return desc, desc if proxy else impl


def _store(scope: str, proxy: bool):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (8, 8), "float32", align=64, scope=scope, offset_factor=1)
        C = T.match_buffer(c, (8, 8), "float32", align=64, scope="shared", offset_factor=1)
        with T.sblock("root"):
            T.reads(A[0:8, 0:8])
            T.writes(C[0:8, 0:8])
            for i, j in T.grid(8, 8):
                with T.sblock("store"):
                    vii, vjj = T.axis.remap("SS", [i, j])
                    C[vii, vjj] = A[vii, vjj]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, c: T.handle) -> None:
        s0, s1, d0, d1 = T.int32(), T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (8, 8), "float32", align=64, scope=scope, strides=[s1, s0], offset_factor=1)
        C = T.match_buffer(c, (8, 8), "float32", align=64, scope="shared", strides=[d1, d0], offset_factor=1)
        with T.sblock("root"):
            T.reads(A[0:8, 0:8])
            T.writes(C[0:8, 0:8])
            T.metal.simdgroup_store(A.data, index=get_simdgroup_index(A, s1, 8, 8),
                                    ptr=C.access_ptr("w", ptr_type="float32"), stride=d1, col=8, row=8,
                                    transpose_matrix=False)

    return desc, desc if proxy else impl


def _multiply_accumulate(scope: str, proxy: bool):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (8, 8), "float16", scope=scope, offset_factor=1)
        B = T.match_buffer(b, (8, 8), "float16", scope=scope, offset_factor=1)
        C = T.match_buffer(c, (8, 8), "float32", scope=scope, offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:8, 0:8], A[0:8, 0:8], B[0:8, 0:8])
            T.writes(C[0:8, 0:8])
            for i, j, k in T.grid(8, 8, 8):
                with T.sblock(""):
                    vii, vjj, vkk = T.axis.remap("SSR", [i, j, k])
                    C[vii, vjj] = C[vii, vjj] + T.Cast("float32", A[vii, vkk]) * T.Cast("float32", B[vkk, vjj])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        a0, a1, b0, b1, c0, c1 = T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (8, 8), "float16", scope=scope, strides=[a1, a0], offset_factor=1)
        B = T.match_buffer(b, (8, 8), "float16", scope=scope, strides=[b1, b0], offset_factor=1)
        C = T.match_buffer(c, (8, 8), "float32", scope=scope, strides=[c1, c0], offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:8, 0:8], A[0:8, 0:8], B[0:8, 0:8])
            T.writes(C[0:8, 0:8])
            T.metal.simdgroup_multiply_accumulate(C.data, get_simdgroup_index(C, c1, 8, 8),
                                                  A.data, get_simdgroup_index(A, a1, 8, 8),
                                                  B.data, get_simdgroup_index(B, b1, 8, 8),
                                                  C.data, get_simdgroup_index(C, c1, 8, 8))

    return desc, desc if proxy else impl


def intrinsics(proxy: bool) -> dict[str, str]:
    """The intrinsic names of one group (registered on first use): init, load_a, load_b, compute, store."""
    suffix = "_proxy" if proxy else ""
    names = {role: f"sam3spec_simdgroup_{role}_8x8x8_f16f32{suffix}"
             for role in ("init", "load_a", "load_b", "compute", "store")}
    if proxy not in _REGISTERED:
        scope = FRAGMENT[proxy]
        for role, (desc, impl) in {"init": _fill(scope, proxy), "load_a": _load(scope, proxy, False),
                                   "load_b": _load(scope, proxy, True), "store": _store(scope, proxy),
                                   "compute": _multiply_accumulate(scope, proxy)}.items():
            TensorIntrin.register(names[role], desc, impl, override=True)
        _REGISTERED.add(proxy)
    return names


class SimdgroupMatmul(GPUScheduleRule):
    """dlight's MetalMatmul schedule (16x64 output tiles per threadgroup of 4 simdgroups, K in steps of 32
    through threadgroup memory, 8x8 simdgroup fragments) for float16 operands with a float32 output; declines
    (None) anything else. proxy: see the module's docstring."""

    def __init__(self, proxy: bool = False):
        self.proxy = proxy

    def apply(self, func: tirx.PrimFunc, target, _tunable: bool):  # pylint: disable=too-many-locals
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "metal":
            return None
        sch = s_tir.Schedule(func)
        reduction_blocks = get_reduction_blocks(sch, sch.get_child_blocks(get_root_block(sch)))
        if reduction_blocks is None or len(reduction_blocks) != 1:
            return None
        main_block = reduction_blocks[0]
        if get_in_out_dtypes(sch.get(main_block)) != ("float16", "float32"):
            return None
        index_maps = get_index_map(sch.get(main_block))
        if index_maps is None:
            return None
        block_x, block_y, block_k, micro, warp, ty_len, tz_len, vector = 16, 16, 32, 8, 32, 1, 4, 4
        reindex_a = sch.reindex(main_block, ("read", 0))
        reindex_b = sch.reindex(main_block, ("read", 1))
        reindex_c = sch.reindex(main_block, ("write", 0))
        matmul_map, a_map, b_map, c_map = index_maps
        sch.transform_layout(reindex_a, ("write", 0), a_map)
        sch.transform_layout(reindex_b, ("write", 0), b_map)
        sch.transform_layout(reindex_c, ("read", 0), c_map)
        sch.transform_block_layout(main_block, matmul_map)
        sch.pad_einsum(main_block, [1, ty_len * block_x, tz_len * block_y, block_k])

        batch, i, j, k = sch.get_loops(main_block)
        bx, ty, i0, i1 = sch.split(i, [None, ty_len, block_x // micro, micro])
        by, tz, j0, j1 = sch.split(j, [None, tz_len, block_y // micro, micro])
        k0, k1, k2 = sch.split(k, [None, block_k // micro, micro])
        sch.reorder(bx, by, ty, tz, k0, k1, i0, j0, i1, j1, k2)
        sch.bind(bx, "blockIdx.x")
        sch.bind(by, "blockIdx.y")
        sch.bind(batch, "blockIdx.z")
        sch.bind(ty, "threadIdx.y")
        sch.bind(tz, "threadIdx.z")

        def fetch_to_shared(index):
            block_read = sch.cache_read(main_block, index, "shared")
            sch.compute_at(block_read, k0, preserve_unit_loops=True)
            fused = sch.fuse(*sch.get_loops(block_read)[-2:])
            _, _tz, _ty, _tx, vec = sch.split(fused, [None, tz_len, ty_len, warp, vector])
            sch.bind(_tz, "threadIdx.z")
            sch.bind(_ty, "threadIdx.y")
            sch.bind(_tx, "threadIdx.x")
            sch.vectorize(vec)
            return block_read

        auto_inline_producers(sch, fetch_to_shared(0))
        auto_inline_producers(sch, fetch_to_shared(1))

        scope, names = FRAGMENT[self.proxy], intrinsics(self.proxy)
        a_frag = sch.cache_read(main_block, 0, scope)
        b_frag = sch.cache_read(main_block, 1, scope)
        sch.compute_at(a_frag, k1)
        sch.compute_at(b_frag, k1)
        c_frag = sch.cache_write(main_block, 0, scope)
        c_shared = sch.cache_write(c_frag, 0, "shared")
        sch.reverse_compute_at(c_frag, tz, preserve_unit_loops=True)
        sch.reverse_compute_at(c_shared, by, preserve_unit_loops=True)
        sch.transform_layout(b_frag, ("write", 0), lambda s, i, j: (s, j, i))

        def tensorize(block, intrin):
            *_, i, j = sch.get_loops(block)
            io, ii = sch.split(i, [None, micro])
            jo, ji = sch.split(j, [None, micro])
            sch.reorder(io, jo, ii, ji)
            sch.tensorize(ii, intrin)

        c_init = sch.decompose_reduction(main_block, k0)
        tensorize(a_frag, names["load_a"])
        tensorize(b_frag, names["load_b"])
        tensorize(c_frag, names["store"])
        tensorize(c_init, names["init"])
        *_, i, j, k = sch.get_loops(main_block)
        sch.tensorize(i, names["compute"])

        auto_inline_consumer_chain(sch, c_shared)
        fused = sch.fuse(*sch.get_loops(c_shared)[-2:])
        _, _tz, _ty, _tx, vec = sch.split(fused, [None, tz_len, ty_len, warp, vector])
        sch.bind(_tz, "threadIdx.z")
        sch.bind(_ty, "threadIdx.y")
        sch.bind(_tx, "threadIdx.x")
        sch.vectorize(vec)
        return sch
