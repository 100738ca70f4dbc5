"""Slices with symbolic bounds (the tracker's memory keys: the first frames x tokens rotated, the pointer tokens
after them) keep exact shapes."""

from __future__ import annotations

import sys

import torch.fx as fx
from tvm import relax


def slice_tensor(node, importer):
    """slice.Tensor: the frontend clamps symbolic bounds into T.min(...) shapes that a later pass cannot type
    ("Cannot find the FInferType attribute registered to op: prim.if_then_else"). torch.export has already
    checked the bounds for every allowed size, so a slice with a symbolic bound is emitted in bounds, its
    open end as the axis' size. Slices with constant bounds go through the frontend unchanged."""
    args = [importer.env[a] if isinstance(a, fx.Node) else a for a in node.args]
    x, dim = args[0], args[1] if len(args) > 1 else 0
    start = args[2] if len(args) > 2 and args[2] is not None else 0
    end = args[3] if len(args) > 3 and args[3] is not None else sys.maxsize
    step = args[4] if len(args) > 4 else 1
    if all(isinstance(v, int) for v in (start, end, step)):
        return importer._slice(node)
    shape = list(importer.shape_of(x))
    dim = dim % len(shape)
    if isinstance(end, int) and end >= sys.maxsize:
        end = shape[dim]
    if any(isinstance(v, int) and v < 0 for v in (start, end)) or step != 1:
        return importer._slice(node)
    return importer.block_builder.emit(relax.op.strided_slice(x, axes=[dim], begin=[start], end=[end],
                                                              strides=[step], assume_inbound=True))
