"""`repeat_interleave.self_int` (SAM's mask decoder repeats image embeddings per prompt) has no Relax converter."""

from tvm import relax


def repeat_interleave_int(node, importer):
    args = importer.retrieve_args(node)
    x, repeats = args[0], args[1]
    dim = args[2] if len(args) > 2 else node.kwargs.get("dim")
    bb = importer.block_builder
    if dim is None:
        x, dim = bb.emit(relax.op.reshape(x, [-1])), 0
    return bb.emit(relax.op.repeat(x, repeats, axis=dim))
