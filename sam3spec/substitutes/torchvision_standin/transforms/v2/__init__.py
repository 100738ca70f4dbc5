"""torchvision.transforms.v2: Compose, ToDtype, Resize and Normalize on image tensors, as Sam3Processor builds
its transform (sam3_image_processor.py:20); other names are placeholders."""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor

from sam3spec.substitutes.torchvision_standin._placeholder import module_getattr

__getattr__ = module_getattr(__name__)
functional = __getattr__("functional")  # torchvision.transforms.v2.functional (under the alias)


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for transform in self.transforms:
            x = transform(x)
        return x


class ToDtype:
    def __init__(self, dtype: torch.dtype, scale: bool = False):
        self.dtype, self.scale = dtype, scale

    def __call__(self, image: Tensor) -> Tensor:
        return functional.to_dtype(image, self.dtype, self.scale)


class Resize:
    """Bilinear, antialiased (v2's defaults for tensors)."""

    def __init__(self, size: List[int]):
        self.size = [int(s) for s in size]

    def __call__(self, image: Tensor) -> Tensor:
        return functional.resize(image, self.size)


class Normalize:
    def __init__(self, mean: List[float], std: List[float]):
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]

    def __call__(self, image: Tensor) -> Tensor:
        return functional.normalize(image, self.mean, self.std)
