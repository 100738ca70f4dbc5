"""Torch ops that reach the frontend under an overload name it does not list, though it has the converter."""

from sam3spec.converters import convert_as


def unsafe_view(node, importer):
    """_unsafe_view.default (what functionalisation makes of some views): a reshape, as view.default."""
    return convert_as("view.default", node, importer)
