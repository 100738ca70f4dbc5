"""LegalizeOps overrides: stride == kernel convolutions and transposed convolutions as contractions (exact), and
GELU's erf as a vectorisable polynomial."""

from __future__ import annotations

import tvm

from sam3spec.pipelines import plain_conv2d, static_shape


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
