"""torchvision.transforms: ToTensor, Resize and Normalize (built, and TorchScript-compiled, by SAM3's
SAM2Transforms in sam1_utils.py when the interactive predictor is constructed); other names are placeholders."""

from typing import List

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam3spec.substitutes.torchvision_standin._placeholder import module_getattr

__getattr__ = module_getattr(__name__)


class ToTensor:
    """PIL image or HxWxC uint8 array → CxHxW float tensor in [0, 1]."""

    def __call__(self, pic) -> Tensor:
        array = np.asarray(pic)
        tensor = torch.from_numpy(array.copy()).reshape(array.shape[0], array.shape[1], -1).permute(2, 0, 1)
        return tensor.float().div(255) if tensor.dtype == torch.uint8 else tensor.float()


class Resize(nn.Module):
    """Bilinear resize (antialiased) of a [..., C, H, W] tensor to `size` (h, w)."""

    def __init__(self, size: List[int]):
        super().__init__()
        self.size = [int(s) for s in size]

    def forward(self, x: Tensor) -> Tensor:
        batched = x.dim() == 4
        y = F.interpolate(x if batched else x.unsqueeze(0), size=self.size, mode="bilinear",
                          align_corners=False, antialias=True)
        return y if batched else y.squeeze(0)


class Normalize(nn.Module):
    """(x - mean) / std per channel of a [..., C, H, W] tensor."""

    def __init__(self, mean: List[float], std: List[float]):
        super().__init__()
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def forward(self, x: Tensor) -> Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std
