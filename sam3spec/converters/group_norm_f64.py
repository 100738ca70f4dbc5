"""TVM's group_norm sums millions of fp32 values per group in one sequential loop (SAM3's pixel decoder:
2.6M per group at 288x288), losing ~1e-3; statistics are taken in float64, two-pass, as exact as torch."""

from tvm import relax


def group_norm_f64(node, importer):
    args = importer.retrieve_args(node)
    x, groups = args[0], args[1]
    gamma = args[2] if len(args) > 2 else None
    beta = args[3] if len(args) > 3 else None
    eps = args[4] if len(args) > 4 else 1e-5
    bb = importer.block_builder
    shape = importer.shape_of(x)
    dtype = x.ty.dtype
    grouped = bb.emit(relax.op.astype(relax.op.reshape(x, [shape[0], groups, -1]), "float64"))
    mean = bb.emit(relax.op.mean(grouped, axis=[2], keepdims=True))
    centred = bb.emit(relax.op.subtract(grouped, mean))
    var = bb.emit(relax.op.mean(relax.op.multiply(centred, centred), axis=[2], keepdims=True))
    normed = relax.op.multiply(centred, relax.op.rsqrt(relax.op.add(var, relax.const(eps, "float64"))))
    out = bb.emit(relax.op.reshape(relax.op.astype(normed, dtype), shape))
    channel_shape = [1, shape[1]] + [1] * (len(shape) - 2)
    if gamma is not None:
        out = bb.emit(relax.op.multiply(out, relax.op.reshape(gamma, channel_shape)))
    if beta is not None:
        out = bb.emit(relax.op.add(out, relax.op.reshape(beta, channel_shape)))
    return out
