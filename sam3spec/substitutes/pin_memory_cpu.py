"""`Tensor.pin_memory()` raises without an accelerator; SAM3 pins a 4-element box scale on every box prompt.

SequenceGeometryEncoder._encode_boxes (geometry_encoders.py:659) does
`scale.pin_memory().to(device, non_blocking=True)` on a tensor it has just built, so any box prompt fails
on a CPU-only machine ("Cannot access accelerator device when none is available") and export would
record an `aten._pin_memory` op. Pinning only changes how host memory is allocated, never values: this
replacement returns the tensor itself when no accelerator is present or while exporting, and calls the
real method otherwise.

replace: torch:Tensor.pin_memory
with:    sam3spec.substitutes.pin_memory_cpu:pin_memory
"""

from __future__ import annotations

import torch

_ORIGINAL = getattr(torch.Tensor.pin_memory, "_sam3spec_original", torch.Tensor.pin_memory)


def _no_accelerator() -> bool:
    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return not acc.is_available()
    return not torch.cuda.is_available()


def pin_memory(self, *args, **kwargs):
    if torch.compiler.is_exporting() or torch.compiler.is_compiling() or _no_accelerator():
        return self
    return _ORIGINAL(self, *args, **kwargs)


pin_memory._sam3spec_original = _ORIGINAL
