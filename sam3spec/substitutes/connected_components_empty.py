"""SAM3's CPU connected components fail on an empty batch (connected_components.py:48 stacks an empty list):
every frame without new detections reaches it (fill_holes_in_mask_scores, sam3_video_base.py:970). The CUDA
kernels return empty tensors there; so does this, and it calls the original otherwise.

replace: sam3.perflib.connected_components:connected_components_cpu
with:    sam3spec.substitutes.connected_components_empty:connected_components_cpu
"""

from __future__ import annotations

import torch
from sam3.perflib import connected_components as _cc

_ORIGINAL = _cc.connected_components_cpu


def connected_components_cpu(input_tensor: torch.Tensor):
    if input_tensor.shape[0] == 0:
        empty = torch.zeros(input_tensor.shape, dtype=torch.int64, device=input_tensor.device)
        return empty, empty.clone()
    return _ORIGINAL(input_tensor)
