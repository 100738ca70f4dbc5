"""LegalizeOps overrides: stride == kernel and strided convolutions, and transposed convolutions, as contractions
(exact up to summation order), and GELU's erf as a vectorisable polynomial."""

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


MIN_STRIDED_CHANNELS = 64   # strided convolutions with fewer output channels keep the stock legalization


def _strided(attrs, kshape) -> bool:
    """A 3x3-like convolution with stride > 1 (the tracker's mask downsampler: stride 2, padding 1): NCHW/OIHW,
    one group, no dilation, at least MIN_STRIDED_CHANNELS output channels."""
    return (attrs.data_layout == "NCHW" and attrs.kernel_layout == "OIHW" and attrs.out_layout == "NCHW"
            and int(attrs.groups) == 1 and all(int(v) == 1 for v in attrs.dilation)
            and all(int(v) > 1 for v in attrs.strides) and kshape[0] >= MIN_STRIDED_CHANNELS)


def patch_conv_legalize_map() -> dict:
    """``LegalizeOps`` override for ``nn.conv2d`` with stride == kernel size, or a kernel as large as the
    input, no padding, dilation or groups (a ViT patch embedding, 14x14 stride 14; the geometry
    encoder's 7x7 box pooling), and for strided convolutions with padding and at least 64 output channels
    (the tracker's mask downsampler, 3x3 stride 2): patches [N, OH*OW, C*KH*KW] (zeros where a window
    reaches into the padding) times weight rows [O, C*KH*KW] -- a matmul for :func:`rule_contraction` --
    then an NCHW copy. TOPI's direct conv loop nest (input window inner) ran SAM3's 1008x1008 patch
    embedding in 1.6 s, and a 64 -> 256 channel 3x3 stride-2 convolution at 144x144 at ~9 GFLOP/s (its
    strided input reads do not vectorise); anything else keeps the stock legalization."""
    from tvm import te  # pylint: disable=import-outside-toplevel

    op_name = "relax.nn.conv2d"
    default = tvm.ir.Op.get(op_name).get_attr("FLegalize")

    def _legalize(bb, call):
        attrs = call.attrs
        kshape = static_shape(call.args[1])
        dshape = static_shape(call.args[0], skip=1)  # the batch may be symbolic
        if kshape is None or dshape is None:
            return default(bb, call)
        patch = (
            plain_conv2d(attrs, "OIHW")
            # stride == kernel, or one window covering the whole input (the stride does not matter)
            and ([int(v) for v in attrs.strides] == kshape[2:] or dshape[1:] == kshape[2:])
            and kshape[2] * kshape[3] > 1 and dshape[1] % kshape[2] == 0 and dshape[2] % kshape[3] == 0
        )
        if not patch and not _strided(attrs, kshape):
            return default(bb, call)
        out_dtype = str(call.ty.dtype)
        kh, kw = kshape[2], kshape[3]
        sh, sw = (kh, kw) if patch else (int(attrs.strides[0]), int(attrs.strides[1]))
        pt, pl, pb, pr = (0, 0, 0, 0) if patch else [int(v) for v in attrs.padding]

        def _te(data, kernel):
            n, c, h, w = data.shape
            o = kernel.shape[0]
            oh, ow, r = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1, c * kh * kw

            def window(b, p, q):
                y = p // ow * sh + q // kw % kh - pt
                x = p % ow * sw + q % kw - pl
                value = data[b, q // (kh * kw), y, x]
                if not (pt or pl or pb or pr):
                    return value
                inside = tvm.tirx.all(y >= 0, y < h, x >= 0, x < w)
                return tvm.tirx.if_then_else(inside, value, tvm.tirx.const(0, data.dtype))

            patches = te.compute((n, oh * ow, r), window, name="patches")
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
