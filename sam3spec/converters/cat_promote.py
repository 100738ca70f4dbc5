"""torch.cat promotes mixed dtypes (float coordinates with int labels) and skips empty inputs; Relax concat
needs one dtype, and an empty input becomes a zero-size constant that the VM cannot load back."""

from tvm import relax


def _empty(importer, t) -> bool:
    return any(isinstance(d, int) and d == 0 or getattr(d, "value", None) == 0 for d in importer.shape_of(t))


def cat_promote(node, importer):
    args = importer.retrieve_args(node)
    tensors = args[0]
    axis = args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    dtype = str(node.meta["val"].dtype).replace("torch.", "")
    bb = importer.block_builder
    tensors = [t for t in tensors if not _empty(importer, t)] or tensors[:1]
    tensors = [t if t.ty.dtype == dtype else bb.emit(relax.op.astype(t, dtype)) for t in tensors]
    return bb.emit(relax.op.concat(tensors, axis=axis)) if len(tensors) > 1 else tensors[0]
