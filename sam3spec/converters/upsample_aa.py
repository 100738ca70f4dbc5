"""Antialiased bilinear resizes that enlarge: the plain bilinear resize, which they equal."""

from __future__ import annotations

from sam3spec.converters import convert_as


def upsample_bilinear2d_aa(node, importer):
    """_upsample_bilinear2d_aa.vec (F.interpolate(..., antialias=True); the tracker's mask downsampler enlarges
    1008 -> 1152): when no side shrinks, the antialiasing filter's support is one pixel, a bilinear tent, so the
    frontend's upsample_bilinear2d.vec computes it (measured: max abs 4.8e-7 at 1008 -> 1152). Shrinking, which
    really filters, is refused."""
    x, size = node.args[0], node.args[1]
    shape = importer.shape_of(importer.env[x])
    sides = [int(s) for s in list(shape)[-2:]]
    if size is None or any(int(o) < i for o, i in zip(size, sides)):
        raise NotImplementedError(f"antialiased bilinear resize from {sides} to {size}: only enlarging is converted "
                                  "(there it equals the plain bilinear resize)")
    return convert_as("upsample_bilinear2d.vec", node, importer)
