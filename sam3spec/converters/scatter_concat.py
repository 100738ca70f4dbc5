"""Functionalised in-place writes (`x[..., i] = v`, `x[a:b] = v`) become select_scatter / slice_scatter:
the frontend has no select_scatter, and its slice_scatter needs constant bounds (dynamic prompt counts
fail with "Expect value to be constant int"). Both are rebuilt as a concat of the untouched slices."""

from tvm import relax


def _concat_around(importer, x, middle, dim, start, end):
    bb = importer.block_builder
    size = importer.shape_of(x)[dim]
    parts = []
    if not (isinstance(start, int) and start == 0):
        parts.append(bb.emit(relax.op.strided_slice(x, axes=[dim], begin=[0], end=[start])))
    parts.append(middle)
    parts.append(bb.emit(relax.op.strided_slice(x, axes=[dim], begin=[end], end=[size])))
    return bb.emit(relax.op.concat(parts, axis=dim))


def select_scatter(node, importer):
    x, src, dim, index = importer.retrieve_args(node)[:4]
    dim = dim % len(importer.shape_of(x))
    if index < 0:
        index += int(importer.shape_of(x)[dim])
    middle = importer.block_builder.emit(relax.op.expand_dims(src, axis=dim))
    return _concat_around(importer, x, middle, dim, index, index + 1)


def slice_scatter(node, importer):
    args = importer.retrieve_args(node)
    x, src = args[0], args[1]
    dim = args[2] if len(args) > 2 else node.kwargs.get("dim", 0)
    start = args[3] if len(args) > 3 else node.kwargs.get("start")
    end = args[4] if len(args) > 4 else node.kwargs.get("end")
    step = args[5] if len(args) > 5 else node.kwargs.get("step", 1)
    if step != 1:
        raise NotImplementedError("slice_scatter with step != 1")
    dim = dim % len(importer.shape_of(x))
    size = importer.shape_of(x)[dim]
    start = 0 if start is None else start
    end = size if end is None or (isinstance(end, int) and end >= 2**62) else end
    return _concat_around(importer, x, src, dim, start, end)
