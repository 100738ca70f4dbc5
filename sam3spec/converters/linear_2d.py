"""N-D `linear` becomes a broadcast batch matmul over the weight; flattening to 2-D keeps it one plain GEMM."""

from tvm import relax


def linear_2d(node, importer):
    x, weight, *rest = importer.retrieve_args(node)
    bias = rest[0] if rest else None
    bb = importer.block_builder
    shape = list(importer.shape_of(x))
    if len(shape) == 2:
        return bb.emit(relax.op.linear(x, weight, bias))
    flat = bb.emit(relax.op.reshape(x, [-1, shape[-1]]))
    out = bb.emit(relax.op.linear(flat, weight, bias))
    out_features = importer.shape_of(weight)[0]
    return bb.emit(relax.op.reshape(out, shape[:-1] + [out_features]))
