"""masked_fill.Scalar is imported through full_like without a dtype; legalization then fails ("PrimType")."""

from tvm import relax


def masked_fill_scalar(node, importer):
    x, mask, value = importer.retrieve_args(node)[:3]
    fill = relax.const(value, x.ty.dtype)
    return importer.block_builder.emit(relax.op.where(mask, fill, x))
