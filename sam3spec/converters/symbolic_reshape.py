"""Reshapes between shapes with symbolic expressions (the tracker's memory: frames x tokens)."""

from __future__ import annotations

import torch
from tvm import sym


def _same(a, b) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return sym.Analyzer().can_prove_equal(a, b)


def reshape(node, importer):
    """view.default / reshape.default as the frontend converts them, with its identity check done by TVM's
    arithmetic analyzer: the frontend compares the shapes with ==, which raises on a symbolic expression
    ("Cannot use and / or / not operator to Expr")."""
    args = importer.retrieve_args(node)
    x = args[0]
    dims = args[1] if isinstance(args[1], (torch.Size, tuple, list)) else args[1:]
    current = importer.shape_of(x)
    if current is not None and len(current) == len(dims) and all(_same(a, b) for a, b in zip(current, dims)):
        return x
    return importer._emit_torch_reshape(x, dims)
