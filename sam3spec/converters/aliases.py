"""Torch ops that reach the frontend under an overload name it does not list, though it has the converter."""


def unsafe_view(node, importer):
    """_unsafe_view.default (what functionalisation makes of some views): a reshape, as view.default."""
    return importer.convert_map["view.default"](node)
