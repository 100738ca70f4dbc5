"""torchvision.ops: roi_align (pure torch) and masks_to_boxes."""

import torch

# Bound through the submodule, as torchvision does, so `import torchvision.ops.roi_align` cannot shadow it.
from .roi_align import RoIAlign, roi_align  # noqa: F401
from sam3spec.substitutes.torchvision_standin._placeholder import module_getattr

__getattr__ = module_getattr(__name__)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """torchvision.ops.masks_to_boxes: [N,H,W] bool → [N,4] xyxy of the set pixels."""
    if masks.numel() == 0:
        return torch.zeros((0, 4), device=masks.device, dtype=torch.float)
    n, h, w = masks.shape
    y = torch.arange(h, dtype=torch.float, device=masks.device)
    x = torch.arange(w, dtype=torch.float, device=masks.device)
    y, x = torch.meshgrid(y, x, indexing="ij")
    m = masks.bool()
    big = torch.tensor(float("inf"), device=masks.device)
    x_mask = torch.where(m, x, -big).flatten(1).max(-1).values
    x_min = torch.where(m, x, big).flatten(1).min(-1).values
    y_mask = torch.where(m, y, -big).flatten(1).max(-1).values
    y_min = torch.where(m, y, big).flatten(1).min(-1).values
    return torch.stack([x_min, y_min, x_mask, y_mask], 1)
