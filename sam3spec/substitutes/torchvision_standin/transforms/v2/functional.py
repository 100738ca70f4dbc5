"""torchvision.transforms.v2.functional: to_image, to_dtype, resize and normalize for image tensors (what
Sam3Processor calls); other names are placeholders."""

from __future__ import annotations

from typing import List

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sam3spec.substitutes.torchvision_standin._placeholder import module_getattr

__getattr__ = module_getattr(__name__)


def to_image(inpt) -> Tensor:
    """PIL image or HxWxC array → CxHxW tensor of the same dtype (a view, as torchvision returns)."""
    if isinstance(inpt, Tensor):
        return inpt
    array = np.asarray(inpt)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def to_dtype(image: Tensor, dtype: torch.dtype = torch.float32, scale: bool = False) -> Tensor:
    """Integer → float scales by 1 / max of the integer type (multiplied, as torchvision does)."""
    if image.dtype == dtype:
        return image
    if not scale or image.is_floating_point() == dtype.is_floating_point:
        if scale and not image.is_floating_point():
            raise NotImplementedError("integer to integer rescaling is not needed by SAM3")
        return image.to(dtype)
    if image.is_floating_point():
        raise NotImplementedError("float to integer rescaling is not needed by SAM3")
    return image.to(dtype).mul_(1.0 / torch.iinfo(image.dtype).max)


def _native_uint8_bilinear() -> bool:
    """torchvision resizes uint8 images natively on CPUs with AVX2/AVX-512, through float32 elsewhere."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def resize(image: Tensor, size: List[int]) -> Tensor:
    """Bilinear antialiased resize of a [..., C, H, W] tensor to size (h, w); uint8 stays uint8."""
    shape = image.shape
    channels, height, width = shape[-3:]
    new_h, new_w = (size[0], size[0]) if len(size) == 1 else (size[0], size[1])
    if (new_h, new_w) == (height, width) or image.numel() == 0:
        return image
    dtype = image.dtype
    native = dtype in (torch.float32, torch.float64) or (
        dtype == torch.uint8 and image.device.type == "cpu" and _native_uint8_bilinear())
    x = image.reshape(-1, channels, height, width)
    strides = x.stride()
    if x.is_contiguous(memory_format=torch.channels_last) and x.shape[0] == 1 and image.numel() != strides[0]:
        # a single HWC-strided image: keep it channels_last through interpolate, as torchvision does
        x = x.as_strided((1, channels, height, width), (image.numel(), *strides[1:]))
    if not native:
        x = x.to(torch.float32)
    x = F.interpolate(x, size=[new_h, new_w], mode="bilinear", align_corners=False, antialias=True)
    if not native:
        x = x.round_().to(dtype) if not dtype.is_floating_point else x.to(dtype)
    return x.reshape(shape[:-3] + (channels, new_h, new_w))


def normalize(image: Tensor, mean: List[float], std: List[float]) -> Tensor:
    mean_t = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    return image.sub(mean_t).div_(std_t)
