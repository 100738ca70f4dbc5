"""`all.default` (SAM3's is_right_padded runtime check in the geometry encoder) has no Relax converter."""

from tvm import relax


def all_default(node, importer):
    x = importer.retrieve_args(node)[0]
    bb = importer.block_builder
    as_int = bb.emit(relax.op.astype(x, "int32"))
    return bb.emit(relax.op.astype(relax.op.min(as_int), "bool"))
