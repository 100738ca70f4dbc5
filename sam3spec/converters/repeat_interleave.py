"""`repeat_interleave.self_int` (SAM's mask decoder repeats image embeddings per prompt) has no Relax converter."""

from tvm import relax

from sam3spec.converters.repeat_broadcast import is_one


def repeat_interleave_int(node, importer):
    """Relax's repeat takes a constant count; a symbolic one (the tracker's objects) along an axis of size 1 is a
    broadcast."""
    args = importer.retrieve_args(node)
    x, repeats = args[0], args[1]
    dim = args[2] if len(args) > 2 else node.kwargs.get("dim")
    bb = importer.block_builder
    if dim is None:
        x, dim = bb.emit(relax.op.reshape(x, [-1])), 0
    if isinstance(repeats, int):
        return bb.emit(relax.op.repeat(x, repeats, axis=dim))
    shape = list(importer.shape_of(x))
    dim %= len(shape)
    if not is_one(shape[dim]):
        raise NotImplementedError(f"repeat_interleave by a symbolic count along an axis of size {shape[dim]}: "
                                  "only an axis of size 1 (a broadcast) is converted")
    shape[dim] = repeats
    return bb.emit(relax.op.broadcast_to(x, shape))
