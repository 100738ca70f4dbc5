"""div(x, 2, rounding_mode="floor") on a float tensor gets an int32 constant; Relax refuses float / int."""

from tvm import relax


def div_tensor_mode(node, importer):
    x, y = importer.retrieve_args(node)[:2]
    mode = node.kwargs.get("rounding_mode")
    bb = importer.block_builder
    dtype = x.ty.dtype
    y = relax.const(y, dtype) if isinstance(y, (int, float)) else y
    if isinstance(y, relax.Expr) and hasattr(y, "ty") and y.ty.dtype != dtype:
        y = bb.emit(relax.op.astype(y, dtype))
    if mode == "floor":
        return bb.emit(relax.op.floor_divide(x, y))
    quotient = bb.emit(relax.op.divide(x, y))
    return bb.emit(relax.op.trunc(quotient)) if mode == "trunc" else quotient
