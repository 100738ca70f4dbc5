"""Apply the manifest's substitutions at their phase: import, build or export.

`replace: pkg.mod:Attr.path` sets that attribute to the object named by `with`; the substitute's module may
define `prepare(root)` to convert module state (run on the component at export). `replace: pkg.mod` (no
colon) serves the `with` module, and its submodules, under that name for every later import.

`keep_original_if` names when the original is left in place instead: `importable` (the module of `replace`
imports here: a machine with the real torchvision), or `importable_and_cuda` (it imports *and* torch sees a CUDA
device: code that only runs on CUDA tensors, such as sam3's triton EDT, whose import succeeds wherever triton is
installed, a CPU-only machine with PyPI's CUDA torch included). What counts is whether the original can run here.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from sam3spec.runtime.resolve import resolve, setattr_dotted


class _Alias(importlib.abc.MetaPathFinder):
    """Imports of `name` and `name.*` load `target` and `target.*` instead."""

    def __init__(self, name: str, target: str):
        self.name, self.target = name, target

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name and not fullname.startswith(self.name + "."):
            return None
        real = self.target + fullname[len(self.name):]
        spec = importlib.util.find_spec(real)
        if spec is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, spec.origin, submodule_search_locations=spec.submodule_search_locations)


def _imports(module: str) -> bool:
    if importlib.util.find_spec(module.split(".")[0]) is None:
        return False
    try:
        importlib.import_module(module)
        return True
    except Exception:
        for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
            del sys.modules[name]
        return False


KEEP_ORIGINAL_IF = ("importable", "importable_and_cuda")


def _cuda_device() -> bool:
    import torch

    return torch.cuda.is_available()


def keeps_original(sub: dict) -> bool:
    """Whether `sub`'s `keep_original_if` condition holds here, so that the original stays in place."""
    condition = sub.get("keep_original_if")
    if condition is None:
        return False
    if condition not in KEEP_ORIGINAL_IF:
        raise ValueError(f"substitution {sub['name']!r}: keep_original_if must be one of {KEEP_ORIGINAL_IF}, "
                         f"not {condition!r}")
    if condition == "importable_and_cuda" and not _cuda_device():
        return False  # checked first: without a device the original is not even imported
    return _imports(sub["replace"].partition(":")[0])


def apply(substitutions: list[dict], when: str, root=None) -> list[str]:
    """Apply those of `substitutions` for phase `when`; returns the names applied."""
    applied = []
    for sub in substitutions:
        if sub["when"] != when:
            continue
        target = sub["replace"]
        aliased = ":" not in target and any(isinstance(f, _Alias) and f.name == target for f in sys.meta_path)
        if not aliased and keeps_original(sub):  # once aliased, `target` imports as the substitute: in effect
            continue
        if ":" in target:
            replacement = resolve(sub["with"])
            setattr_dotted(target, replacement)
            prepare = getattr(importlib.import_module(sub["with"].partition(":")[0]), "prepare", None)
            if root is not None and prepare is not None:
                prepare(root)
        elif not aliased:
            sys.meta_path.insert(0, _Alias(target, sub["with"]))
        applied.append(sub["name"])
    return applied
