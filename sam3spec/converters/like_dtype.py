"""The frontend drops the `dtype=` of zeros_like/full_like (a bool mask's float zeros stay bool; then
full_like's legalization fails with "argument of type 'PrimType' is not iterable")."""

from tvm import relax


def _dtype(node, x) -> str:
    dtype = node.kwargs.get("dtype")
    return str(dtype).replace("torch.", "") if dtype is not None else x.ty.dtype


def zeros_like(node, importer):
    x = importer.retrieve_args(node)[0]
    return importer.block_builder.emit(relax.op.zeros_like(x, dtype=_dtype(node, x)))


def full_like(node, importer):
    x, value = importer.retrieve_args(node)[:2]
    dtype = _dtype(node, x)
    return importer.block_builder.emit(relax.op.full_like(x, relax.const(value, dtype), dtype=dtype))
