"""Attention as one CPU kernel, a block of query rows at a time: scores, softmax and the product with V for
``ROWS`` queries stay in cache instead of a [heads, queries, keys] tensor going through memory three times
(SAM3's global ViT attention: 16 x 5184 x 5184 floats, 1.7 GB, per block). Same sums, same order per row.

:func:`fuse` rewrites ``matmul(softmax(matmul(q, permute(k)) * scale), v)`` (what the sdpa converter emits)
into one ``call_te`` of :func:`attention`; :func:`schedule` is its hand schedule.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, topi
from tvm.s_tir import Schedule

from sam3spec.pipelines import bound_call, rewrite_pass, static_shape

ROWS = 24           # query rows per block (a multiple of ROW_TILE)
ROW_TILE = 6        # register tile rows
COLS = 64           # register tile columns (keys for the scores, values' features for the output)
LANES = 16          # partial results per row of the row max and row sum
KEY_CHUNK = 512     # keys per pass of P @ V (512 x 64 floats of V: 128 KiB, in L2)
ATTR = "sam3spec.attention"

_OPS = {name: tvm.ir.Op.get(f"relax.{name}") for name in ("matmul", "permute_dims", "multiply", "add", "nn.softmax")}


def _row_reduce(x: te.Tensor, reducer, name: str) -> te.Tensor:
    """Reduce the last axis in LANES interleaved partial results first (a vector each step), then across
    them: a plain row reduction is one dependent scalar op per element."""
    *rows, n = x.shape
    outer = te.reduce_axis((0, n // LANES), name=f"{name}_o")
    part = te.compute((*rows, LANES), lambda *i: reducer(x[(*i[:-1], outer * LANES + i[-1])], axis=outer),
                      name=f"{name}_part")
    lane = te.reduce_axis((0, LANES), name=f"{name}_l")
    return te.compute(tuple(rows), lambda *i: reducer(part[(*i, lane)], axis=lane), name=name)


def attention(q: te.Tensor, k: te.Tensor, v: te.Tensor, scale: float, bias: te.Tensor | None = None) -> te.Tensor:
    """softmax(q @ k^T * scale [+ bias]) @ v over the last two axes, batch axes in front; ``bias`` (an additive
    mask, as SAM3's decoder adds its box relative position bias) broadcasts to the scores."""
    *batch, nq, d = q.shape
    nk, dv = k.shape[-2], v.shape[-1]
    nb = len(batch)
    kt = te.compute((*batch, d, nk), lambda *i: k[(*i[:nb], i[nb + 1], i[nb])], name="attn_kt")
    rd = te.reduce_axis((0, d), name="rd")
    scores = te.compute((*batch, nq, nk), lambda *i: te.sum(q[(*i[:nb], i[nb], rd)] * kt[(*i[:nb], rd, i[nb + 1])],
                                                           axis=rd), name="attn_scores")
    if bias is not None:
        lead = len(scores.shape) - len(bias.shape)

        def _bias(*i):
            return bias[tuple(0 if int(n) == 1 else x for n, x in zip(bias.shape, i[lead:]))]

        logits = te.compute(scores.shape, lambda *i: scores[i] * scale + _bias(*i), name="attn_logits")
        rowmax = _row_reduce(logits, te.max, "attn_max")
        shifted = te.compute((*batch, nq, nk), lambda *i: logits[i] - rowmax[i[:-1]], name="attn_shift")
    else:
        rowmax = _row_reduce(scores, te.max, "attn_max")
        shifted = te.compute((*batch, nq, nk), lambda *i: (scores[i] - rowmax[i[:-1]]) * scale, name="attn_shift")
    probs = topi.fast_exp(shifted)
    total = _row_reduce(probs, te.sum, "attn_sum")
    rj = te.reduce_axis((0, nk), name="rj")
    acc = te.compute((*batch, nq, dv), lambda *i: te.sum(probs[(*i[:nb], i[nb], rj)] * v[(*i[:nb], rj, i[nb + 1])],
                                                        axis=rj), name="attn_pv")
    return te.compute((*batch, nq, dv), lambda *i: acc[i] / total[i[:-1]], name="attn_out")


def _bound(mutator, expr, op: str):
    return bound_call(mutator, expr, _OPS[op])


def match(mutator: relax.PyExprMutator, call):
    """(q, k, v, scale, bias, shapes) if `call` is matmul(softmax(matmul(q, permute(k)) * scale [+ bias], -1), v)
    with static shapes (q's, k's, v's, and bias's when there is one), else None. `mutator` looks up bindings."""
    if not call.op.same_as(_OPS["matmul"]):
        return None
    probs, v = call.args
    softmax = _bound(mutator, probs, "nn.softmax")
    if softmax is None or int(softmax.attrs.axis) not in (-1, len(static_shape(probs) or []) - 1):
        return None
    scores, scale, bias = softmax.args[0], 1.0, None
    biased = _bound(mutator, scores, "add")
    if biased is not None:
        scores, bias = biased.args
    scaled = _bound(mutator, scores, "multiply")
    if scaled is not None:
        value = getattr(scaled.args[1], "value", None)  # a relax constant (GenericConst in 0.27)
        data = value.numpy() if hasattr(value, "numpy") else None
        if data is None or data.size != 1:
            return None
        scale, scores = float(data.reshape(())), scaled.args[0]
    product = _bound(mutator, scores, "matmul")
    kt = _bound(mutator, product.args[1], "permute_dims") if product is not None else None
    if kt is None or scale <= 0:
        return None
    q, k = product.args[0], kt.args[0]
    shapes = [static_shape(t) for t in (q, k, v)]
    if any(s is None for s in shapes) or len({len(s) for s in shapes}) != 1:
        return None
    rank = len(shapes[0])
    axes = list(range(rank - 2)) + [rank - 1, rank - 2]
    if kt.attrs.axes is None or [int(a) for a in kt.attrs.axes] != axes:
        return None
    (qs, ks, vs) = shapes
    if qs[:-2] != ks[:-2] or qs[:-2] != vs[:-2] or ks[-2] != vs[-2] or qs[-1] != ks[-1]:
        return None
    if bias is not None:
        bs = static_shape(bias)
        scores_shape = [*qs[:-1], ks[-2]]
        if (bs is None or len(bs) > len(scores_shape)
                or any(b not in (1, s) for b, s in zip(bs[::-1], scores_shape[::-1]))):
            return None
        shapes.append(bs)
    return q, k, v, scale, bias, shapes


@relax.expr_functor.mutator
class _Fuse(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.kernels = {}  # (shapes, scale) -> the kernel's GlobalVar

    def _match(self, call):
        """match(), within the CPU kernel's limits: float32, at least ROWS queries, keys a multiple of COLS."""
        found = match(self, call)
        if found is None:
            return None
        q, k, v, _, bias, shapes = found
        qs, ks, vs = shapes[:3]
        if (qs[-2] < ROWS or ks[-2] % COLS or vs[-1] % 16
                or any(str(t.ty.dtype) != "float32" for t in (q, k, v) + ((bias,) if bias is not None else ()))):
            return None
        return found

    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        match = self._match(call)
        if match is None:
            return call
        q, k, v, scale, bias, shapes = match
        nq = shapes[0][-2]
        pad = -nq % ROWS
        if pad:  # query rows padded to whole blocks (zeros: their rows are computed and dropped)
            q = self._pad_rows(q, pad)
            if bias is not None and len(shapes[3]) >= 2 and shapes[3][-2] == nq:
                bias = self._pad_rows(bias, pad)
                shapes[3] = [*shapes[3][:-2], nq + pad, shapes[3][-1]]
            shapes[0] = [*shapes[0][:-2], nq + pad, shapes[0][-1]]
        args = [q, k, v] + ([bias] if bias is not None else [])
        key = (*map(tuple, shapes), scale)
        if key in self.kernels:  # one kernel per shape: 28 windowed ViT blocks share one
            out_ty = relax.TensorType([*shapes[0][:-1], shapes[2][-1]], "float32")
            fused = self.builder_.emit(relax.call_tir(self.kernels[key], args, out_ty)) if pad else (
                relax.call_tir(self.kernels[key], args, call.ty))
        else:
            fused = self.builder_.call_te(lambda *t: attention(*t[:3], scale, *t[3:]), *args,
                                          primfunc_name_hint="attention")
            gvar = fused.args[0]
            func = self.builder_.get()[gvar]
            # opaque: FuseOps leaves it alone; the attribute tells the schedule pass to use :func:`schedule`
            self.builder_.update_func(gvar, func.with_attrs({"op_pattern": 8, ATTR: True}))
            self.kernels[key] = gvar
        if not pad:
            return fused
        rank = len(shapes[0])
        fused = fused if isinstance(fused, relax.Var) else self.builder_.emit(fused)
        return relax.op.strided_slice(fused, axes=[rank - 2], begin=[0], end=[nq])

    def _pad_rows(self, x, pad: int):
        """x with `pad` rows of zeros appended on its second-to-last axis."""
        rank = len(static_shape(x))
        width = [0] * (2 * rank)
        width[2 * (rank - 2) + 1] = pad
        return self.builder_.emit(relax.op.nn.pad(x, width))



def fuse() -> list:
    """Relax passes: fused attention calls, then dead intermediate bindings removed."""
    return [rewrite_pass(_Fuse, "sam3spec.FuseAttention"), relax.transform.DeadCodeElimination()]


def schedule(sch: Schedule, vec_lanes: int = 16, row_tile: int = ROW_TILE, cols: int = COLS) -> None:
    """Hand schedule of :func:`attention`: parallel over (batch, query block); per block the scores as a
    row_tile x cols register tile over the head dim, row max / exp / sum, then P @ V as a register tile of
    row_tile x cols (or dv, if narrower). The tile fits the register file: 6 x 64 with AVX-512's 32 zmm
    registers, 6 x 16 with AVX2's 16 ymm registers (6 x 64 there spills the accumulators)."""
    get = sch.get_sblock
    exp_block = next(b for b in sch.get_child_blocks(sch.get_sblock("root"))
                     if sch.get(b).name_hint.startswith("T_fast_exp"))
    sch.compute_inline(get("attn_shift"))
    if any(sch.get(b).name_hint == "attn_logits" for b in sch.get_child_blocks(sch.get_sblock("root"))):
        sch.compute_inline(get("attn_logits"))  # scores * scale + bias, read by the row max and the exp
    out = get("attn_out")
    *batch, i, _ = sch.get_loops(out)
    io, _ = sch.split(i, [None, ROWS])
    outer = sch.fuse(*batch, io) if batch else io
    sch.parallel(outer)
    for name in ("attn_pv", "attn_sum", "attn_sum_part", exp_block, "attn_max", "attn_max_part", "attn_scores"):
        sch.compute_at(get(name) if isinstance(name, str) else name, outer, preserve_unit_loops=True)
    # scores: [keys/64, rows/6] x head dim x [6 (unrolled), 64 (vector)]; keys outer, so that each
    # 64-key slice of K^T is read once per block of rows (rows outer re-read all of K^T per row tile)
    scores = get("attn_scores")
    *_, ii, j, rd = sch.get_loops(scores)
    iio, iii = sch.split(ii, [None, row_tile])
    jo, ji = sch.split(j, [None, cols])
    sch.reorder(jo, iio, rd, iii, ji)
    sch.unroll(iii)
    sch.vectorize(ji)
    sch.decompose_reduction(scores, rd)
    # row max and row sum: LANES partial results as one vector, reduced over the row
    for name in ("attn_max_part", "attn_sum_part"):
        block = get(name)
        *_, lane, r = sch.get_loops(block)
        sch.reorder(r, lane)
        sch.vectorize(lane)
        sch.decompose_reduction(block, r)
    # exp(scale * (s - max)): vectorised along keys
    *_, j = sch.get_loops(exp_block)
    _, jv = sch.split(j, [None, vec_lanes])
    sch.vectorize(jv)
    # P @ V: key chunks x [rows/6] x keys in the chunk x [6 (unrolled), dv (vector)]: a chunk of V
    # (KEY_CHUNK x dv) stays in cache for all row tiles, the accumulators go through memory per chunk
    pv = get("attn_pv")
    *_, ii, e, rj = sch.get_loops(pv)
    iio, iii = sch.split(ii, [None, row_tile])
    chunk = next(c for c in (KEY_CHUNK, 256, 128, COLS) if int(sch.get(rj).extent) % c == 0)
    rjo, rji = sch.split(rj, [None, chunk])
    dv = int(sch.get(e).extent)
    eo, ei = sch.split(e, [None, cols if dv % cols == 0 else dv])
    sch.reorder(rjo, iio, eo, rji, iii, ei)
    sch.unroll(iii)
    sch.vectorize(ei)
    sch.decompose_reduction(pv, rjo)
    *_, e = sch.get_loops(out)
    sch.vectorize(e)
    # K transposed once per call: parallel over batch and head dim, keys vectorised
    kt = get("attn_kt")
    loops = sch.get_loops(kt)
    fused = sch.fuse(*loops[:-1])
    sch.parallel(fused)
    _, kv = sch.split(loops[-1], [None, vec_lanes])
    sch.vectorize(kv)
