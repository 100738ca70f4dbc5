"""Attention as one CUDA kernel on tensor cores (wmma), for float16 targets: softmax(q k^T * scale) v without the
[heads, queries, keys] score tensor in global memory (SAM3's global ViT attention writes and reads back
16 x 5184 x 5184 float32 scores, 1.7 GB, per block, and its softmax's float16 copy).

A thread block takes 64 query rows, four warps of 16 rows each, and walks the keys 64 at a time, twice: the first
walk computes each row's max and sum of exponentials, the second the probabilities (exact, normalised, in
float16) and their product with V, accumulated in float32 fragments that never leave the registers. Computing
q k^T twice costs a third more tensor-core work and saves rescaling the output (a wmma fragment's layout is
opaque, so an online softmax would round-trip it through shared memory every step). Operands are read as
float32 and rounded to float16 on their way to shared memory, as autocast's float16 attention rounds them;
products accumulate in float32, the softmax runs in float32.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.script import tirx as T

from sam3spec.pipelines import attention, rewrite_pass

ROWS = 64      # query rows per thread block: 4 warps x 16
KEYS = 64      # keys per step
WARPS = ROWS // 16
HEAD_DIMS = (64,)  # head dims the shared-memory budget below is laid out for (SAM3's ViT: 64)
PAD_HALF = 8   # float16 row padding in shared memory (wmma's ldm: a multiple of 8; breaks bank conflicts)
PAD_FLOAT = 4  # float32 row padding (ldm: a multiple of 4)
F32 = "float32"


def supported(shapes: list[list[int]], has_bias: bool) -> bool:
    """Whether :func:`kernel` takes q, k, v of these shapes: rank 4, head dims in HEAD_DIMS, whole blocks of
    query rows and of keys, no additive bias."""
    q, k, v = shapes[:3]
    return (not has_bias and len(q) == 4 and q[-1] in HEAD_DIMS and v[-1] in HEAD_DIMS
            and q[-2] % ROWS == 0 and k[-2] % KEYS == 0)


def kernel(q_shape, k_shape, v_shape, scale: float) -> tvm.tirx.PrimFunc:
    """The scheduled PrimFunc (q, k, v, out), all float32, rank 4: [batch, heads, tokens, dim]."""
    b0, b1, nq, d = (int(x) for x in q_shape)
    nk, dv = int(k_shape[-2]), int(v_shape[-1])
    tiles, steps = nq // ROWS, nk // KEYS
    hs = max(d, dv, KEYS) + PAD_HALF  # float16 row stride of Q (staged in P_s), K, V, P
    fs = KEYS + PAD_FLOAT             # float32 row stride of the scores
    per_pass = WARPS * 32 * 4  # elements one pass of float32x4 loads by every thread covers
    loads_q, loads_k, loads_v = ROWS * d // per_pass, KEYS * d // per_pass, KEYS * dv // per_pass
    scale = float(scale)
    neg_inf = float("-inf")

    def half_ptr(buf, offset):
        return T.tvm_access_ptr(T.type_annotation("float16"), buf.data, offset, 16 * hs, 1)

    @T.prim_func(private=True, s_tir=True)
    def fused_attention(q: T.Buffer((b0, b1, nq, d), F32), k: T.Buffer((b0, b1, nk, d), F32),
                        v: T.Buffer((b0, b1, nk, dv), F32), out: T.Buffer((b0, b1, nq, dv), F32)):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for bx in T.thread_binding(b0 * b1 * tiles, thread="blockIdx.x"):
            for ty in T.thread_binding(WARPS, thread="threadIdx.y"):
                for tx in T.thread_binding(32, thread="threadIdx.x"):
                    with T.sblock("attention"):
                        T.reads()
                        T.writes()
                        k_s = T.alloc_buffer((KEYS, hs), "float16", scope="shared")
                        v_s = T.alloc_buffer((KEYS, hs), "float16", scope="shared")
                        p_s = T.alloc_buffer((ROWS, hs), "float16", scope="shared")
                        s_s = T.alloc_buffer((ROWS, fs), "float32", scope="shared")
                        stats = T.alloc_buffer((2, ROWS, 2), "float32", scope="shared")
                        q_f = T.alloc_buffer((16, d), "float16", scope="wmma.matrix_a")
                        p_f = T.alloc_buffer((16, 16), "float16", scope="wmma.matrix_a")
                        k_f = T.alloc_buffer((16, 16), "float16", scope="wmma.matrix_b")
                        v_f = T.alloc_buffer((16, 16), "float16", scope="wmma.matrix_b")
                        s_f = T.alloc_buffer((16, KEYS), "float32", scope="wmma.accumulator")
                        o_f = T.alloc_buffer((16, dv), "float32", scope="wmma.accumulator")
                        run = T.alloc_buffer((4,), "float32", scope="local")  # running max, sum, step max; then max, 1/sum
                        i0: T.let[T.int32] = bx // (b1 * tiles)
                        i1: T.let[T.int32] = bx // tiles % b1
                        q0: T.let[T.int32] = bx % tiles * ROWS
                        tid: T.let[T.int32] = ty * 32 + tx
                        row: T.let[T.int32] = ty * 16 + tx % 16  # this thread's softmax row, half its keys
                        side: T.let[T.int32] = tx // 16
                        for i in T.serial(loads_q):  # Q, rounded to float16, staged in P's buffer
                            for e in T.vectorized(4):
                                p_s[(i * WARPS * 32 + tid) * 4 // d, (i * WARPS * 32 + tid) * 4 % d + e] = T.cast(
                                    q[i0, i1, q0 + (i * WARPS * 32 + tid) * 4 // d,
                                      (i * WARPS * 32 + tid) * 4 % d + e], "float16")
                        T.tvm_storage_sync("shared")
                        for kk in T.serial(d // 16):
                            T.tvm_load_matrix_sync(q_f.data, 16, 16, 16, kk, half_ptr(p_s, ty * 16 * hs + kk * 16),
                                                   hs, "row_major")
                        run[0] = T.float32(neg_inf)
                        run[1] = T.float32(0)
                        for n in T.serial(dv // 16):
                            T.tvm_fill_fragment(o_f.data, 16, 16, 16, n, T.float32(0))
                        for walk in T.serial(2):
                            for step in T.serial(steps):
                                T.tvm_storage_sync("shared")
                                for i in T.serial(loads_k):
                                    for e in T.vectorized(4):
                                        k_s[(i * WARPS * 32 + tid) * 4 // d, (i * WARPS * 32 + tid) * 4 % d + e] = (
                                            T.cast(k[i0, i1, step * KEYS + (i * WARPS * 32 + tid) * 4 // d,
                                                     (i * WARPS * 32 + tid) * 4 % d + e], "float16"))
                                if walk == 1:
                                    for i in T.serial(loads_v):
                                        for e in T.vectorized(4):
                                            v_s[(i * WARPS * 32 + tid) * 4 // dv,
                                                (i * WARPS * 32 + tid) * 4 % dv + e] = T.cast(
                                                v[i0, i1, step * KEYS + (i * WARPS * 32 + tid) * 4 // dv,
                                                  (i * WARPS * 32 + tid) * 4 % dv + e], "float16")
                                T.tvm_storage_sync("shared")
                                for n in T.serial(KEYS // 16):  # this warp's 16 x 64 scores
                                    T.tvm_fill_fragment(s_f.data, 16, 16, 16, n, T.float32(0))
                                    for kk in T.serial(d // 16):
                                        T.tvm_load_matrix_sync(k_f.data, 16, 16, 16, 0,
                                                               half_ptr(k_s, n * 16 * hs + kk * 16), hs, "col_major")
                                        T.tvm_mma_sync(s_f.data, n, q_f.data, kk, k_f.data, 0, s_f.data, n)
                                    T.tvm_store_matrix_sync(
                                        s_f.data, 16, 16, 16, n,
                                        T.tvm_access_ptr(T.type_annotation("float32"), s_s.data,
                                                         ty * 16 * fs + n * 16, 16 * fs, 2),
                                        fs, "row_major")
                                T.tvm_storage_sync("shared")
                                if walk == 0:  # running max and sum of exp over this thread's half row
                                    run[2] = run[0]
                                    for j in T.serial(KEYS // 2):
                                        run[2] = T.max(run[2], s_s[row, j * 2 + side] * T.float32(scale))
                                    run[1] = run[1] * T.exp(run[0] - run[2])
                                    for j in T.serial(KEYS // 2):
                                        run[1] = run[1] + T.exp(s_s[row, j * 2 + side] * T.float32(scale) - run[2])
                                    run[0] = run[2]
                                else:  # probabilities in float16, then P V into the output fragments
                                    for j in T.serial(KEYS // 2):
                                        p_s[row, j * 2 + side] = T.cast(
                                            T.exp(s_s[row, j * 2 + side] * T.float32(scale) - run[0]) * run[1],
                                            "float16")
                                    T.tvm_storage_sync("shared")
                                    for kk in T.serial(KEYS // 16):
                                        T.tvm_load_matrix_sync(p_f.data, 16, 16, 16, 0,
                                                               half_ptr(p_s, ty * 16 * hs + kk * 16), hs, "row_major")
                                        for n in T.serial(dv // 16):
                                            T.tvm_load_matrix_sync(v_f.data, 16, 16, 16, 0,
                                                                   half_ptr(v_s, kk * 16 * hs + n * 16), hs,
                                                                   "row_major")
                                            T.tvm_mma_sync(o_f.data, n, p_f.data, 0, v_f.data, 0, o_f.data, n)
                            if walk == 0:  # the two halves of each row combined: its max, 1 / its sum
                                stats[0, row, side] = run[0]
                                stats[1, row, side] = run[1]
                                T.tvm_storage_sync("shared")
                                run[0] = T.max(stats[0, row, 0], stats[0, row, 1])
                                run[1] = T.float32(1) / (stats[1, row, 0] * T.exp(stats[0, row, 0] - run[0])
                                                         + stats[1, row, 1] * T.exp(stats[0, row, 1] - run[0]))
                        for n in T.serial(dv // 16):
                            T.tvm_store_matrix_sync(
                                o_f.data, 16, 16, 16, n,
                                T.tvm_access_ptr(T.type_annotation("float32"), out.data,
                                                 ((i0 * b1 + i1) * nq + q0 + ty * 16) * dv + n * 16, 16 * dv, 2),
                                dv, "row_major")

    return fused_attention


@relax.expr_functor.mutator
class _Fuse(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.kernels = {}  # (shapes, scale) -> the kernel's GlobalVar

    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        match = attention.match(self, call)
        if match is None:
            return call
        q, k, v, scale, bias, shapes = match
        if not supported(shapes, bias is not None) or any(str(t.ty.dtype) != "float32" for t in (q, k, v)):
            return call
        key = (*map(tuple, shapes), scale)
        if key not in self.kernels:
            func = kernel(*shapes[:3], scale).with_attr("op_pattern", 8)  # opaque: FuseOps leaves it alone
            self.kernels[key] = self.builder_.add_func(func, "fused_attention")
        return relax.call_tir(self.kernels[key], [q, k, v], call.ty)



def fuse() -> list:
    """Relax passes: float32 attention of supported shapes as one :func:`kernel` call, then dead intermediate
    bindings removed. Run before mixed precision, which leaves the call as it is."""
    return [rewrite_pass(_Fuse, "sam3spec.FuseAttentionCUDA"), relax.transform.DeadCodeElimination()]
