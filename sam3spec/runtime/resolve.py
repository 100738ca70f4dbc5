"""Resolve `pkg.module:Attr.path` strings to objects, and patch them."""

from __future__ import annotations

import importlib
import operator


def resolve(dotted: str):
    module, _, attr = dotted.partition(":")
    obj = importlib.import_module(module)
    return operator.attrgetter(attr)(obj) if attr else obj


def setattr_dotted(dotted: str, value) -> None:
    module, _, attr = dotted.partition(":")
    owner_path, _, name = attr.rpartition(".")
    owner = resolve(f"{module}:{owner_path}" if owner_path else module)
    setattr(owner, name, value)
