"""`eq/ne` of a bool tensor with a scalar becomes an FCmp on i1 in LLVM ("Invalid operand types"): compare as int32."""

from tvm import relax


def _compare(op):
    def convert(node, importer):
        lhs, rhs = importer.retrieve_args(node)
        bb = importer.block_builder
        if lhs.ty.dtype == "bool":
            lhs = bb.emit(relax.op.astype(lhs, "int32"))
            return bb.emit(op(lhs, relax.const(int(rhs), "int32")))
        return bb.emit(op(lhs, relax.const(rhs, lhs.ty.dtype)))

    return convert


ne_scalar = _compare(relax.op.not_equal)
eq_scalar = _compare(relax.op.equal)
