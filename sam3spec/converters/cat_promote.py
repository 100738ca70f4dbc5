"""torch.cat promotes mixed dtypes (e.g. float coords with int labels); Relax concat requires one dtype."""

from tvm import relax


def cat_promote(node, importer):
    args = importer.retrieve_args(node)
    tensors = args[0]
    axis = args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    dtype = str(node.meta["val"].dtype).replace("torch.", "") if "val" in node.meta else None
    bb = importer.block_builder
    if dtype is not None:
        tensors = [t if t.ty.dtype == dtype else bb.emit(relax.op.astype(t, dtype)) for t in tensors]
    return bb.emit(relax.op.concat(tensors, axis=axis))

