"""`x[-1]` (select.int with a negative index) becomes an out-of-bounds `take` in fast mode: garbage values."""

from tvm import relax


def select_int(node, importer):
    x = importer.env[node.args[0]]
    dim, index = node.args[1], node.args[2]
    size = importer.shape_of(x)[dim]
    if index < 0:
        if not hasattr(size, "value") and not isinstance(size, int):
            return importer.block_builder.emit(relax.op.take(x, relax.const(index, "int64"), dim, mode="wrap"))
        index += int(size)
    return importer.block_builder.emit(relax.op.take(x, relax.const(index, "int64"), dim))
