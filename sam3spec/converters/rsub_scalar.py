"""`1 - x` (rsub.Scalar) gets an int32 constant for an int literal, and Relax refuses int32 - float32."""

from tvm import relax


def rsub_scalar(node, importer):
    x, scalar = importer.retrieve_args(node)[:2]
    alpha = node.kwargs.get("alpha", 1)
    dtype = x.ty.dtype
    other = relax.const(scalar, dtype)
    scaled = x if alpha == 1 else relax.op.multiply(x, relax.const(alpha, dtype))
    return importer.block_builder.emit(relax.op.subtract(other, scaled))
