"""TVM's group_norm sums millions of fp32 values per group in one sequential loop (SAM3's pixel decoder:
2.6M per group at 288x288), losing ~1e-3; statistics are taken in float64, two-pass, as exact as torch. Each use
casts the float32 input itself, so that every cast fuses into its reduction or elementwise kernel and no float64
copy of the input is written (three such copies, 170 MB each, were half the group norm's time on a CPU)."""

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
    grouped = bb.emit(relax.op.reshape(x, [shape[0], groups, -1]))
    mean = bb.emit(relax.op.mean(relax.op.astype(grouped, "float64"), axis=[2], keepdims=True))

    def centred():  # a fresh cast per use: FuseOps fuses each into its consumer
        return relax.op.subtract(relax.op.astype(grouped, "float64"), mean)

    var = bb.emit(relax.op.mean(relax.op.multiply(centred(), centred()), axis=[2], keepdims=True))
    normed = relax.op.multiply(centred(), relax.op.rsqrt(relax.op.add(var, relax.const(eps, "float64"))))
    out = bb.emit(relax.op.reshape(relax.op.astype(normed, dtype), shape))
    channel_shape = [1, shape[1]] + [1] * (len(shape) - 2)
    if gamma is not None:
        out = bb.emit(relax.op.multiply(out, relax.op.reshape(gamma, channel_shape)))
    if beta is not None:
        out = bb.emit(relax.op.add(out, relax.op.reshape(beta, channel_shape)))
    return out
