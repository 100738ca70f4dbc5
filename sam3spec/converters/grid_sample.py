"""F.grid_sample (SAM3's point pooling) exports as grid_sampler.default, which the frontend does not list;
and Relax's grid_sample takes the grid as [N, 2, H, W] where torch has [N, H, W, 2]."""

from tvm import relax

METHODS = {0: "bilinear", 1: "nearest", 2: "bicubic"}
PADDING = {0: "zeros", 1: "border", 2: "reflection"}


def grid_sampler(node, importer):
    args = importer.retrieve_args(node)
    data, grid = args[0], args[1]
    method, padding, align = (list(args) + [0, 0, False][len(args) - 2:])[2:5]
    bb = importer.block_builder
    grid = bb.emit(relax.op.permute_dims(grid, [0, 3, 1, 2]))
    return bb.emit(relax.op.image.grid_sample(data, grid, method=METHODS[method], layout="NCHW",
                                              padding_mode=PADDING[padding], align_corners=bool(align)))
