"""`select_scatter` (functionalised `x[..., i] = v`, in SAM's prompt encoder) has no Relax converter."""

from tvm import relax


def select_scatter(node, importer):
    x, src, dim, index = importer.retrieve_args(node)[:4]
    bb = importer.block_builder
    rank = len(importer.shape_of(x))
    dim = dim % rank
    size = importer.shape_of(x)[dim]
    index = index % int(size) if isinstance(size, int) or hasattr(size, "value") else index
    parts = []
    if index > 0:
        parts.append(bb.emit(relax.op.strided_slice(x, axes=[dim], begin=[0], end=[index])))
    parts.append(bb.emit(relax.op.expand_dims(src, axis=dim)))
    parts.append(bb.emit(relax.op.strided_slice(x, axes=[dim], begin=[index + 1], end=[size])))
    return bb.emit(relax.op.concat(parts, axis=dim))
