"""Repeats by a symbolic count (the memory encoder's position encoding, repeated per object)."""

from __future__ import annotations

import torch
from tvm import relax


def is_one(size) -> bool:
    """A static size of 1 (an int or an IntImm), the only axis a symbolic count can repeat: as a broadcast."""
    return isinstance(size, int) and size == 1 or hasattr(size, "value") and int(size.value) == 1


def repeat(node, importer):
    """repeat.default: Relax's tile takes constant counts only. A symbolic count along an axis of size 1 is a
    broadcast (PositionEmbeddingSine: the cached [1,C,H,W] encoding repeated for B objects); constant counts go
    to the frontend's tile."""
    args = importer.retrieve_args(node)
    x = args[0]
    reps = list(args[1] if isinstance(args[1], (torch.Size, tuple, list)) else args[1:])
    if all(isinstance(r, int) for r in reps):
        return importer._repeat(node)
    shape = [1] * (len(reps) - len(importer.shape_of(x))) + list(importer.shape_of(x))
    if any(not isinstance(r, int) and not is_one(s) for r, s in zip(reps, shape)):
        raise NotImplementedError(f"repeat by {reps} of a tensor of shape {shape}: a symbolic count needs an axis "
                                  "of size 1")
    bb = importer.block_builder
    if any(isinstance(r, int) and r != 1 for r in reps):  # constant counts first, then the broadcast
        x = bb.emit(relax.op.tile(x, [r if isinstance(r, int) else 1 for r in reps]))
        shape = [s * r if isinstance(r, int) else s for s, r in zip(shape, reps)]
    x = bb.emit(relax.op.reshape(x, shape)) if len(shape) != len(importer.shape_of(x)) else x
    return bb.emit(relax.op.broadcast_to(x, [s if isinstance(r, int) else r for s, r in zip(shape, reps)]))
