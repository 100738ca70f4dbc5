"""SAM3's frame loading (io_utils.py) without torchvision's resize, CUDA copies or float16 frames.

`load_image`: io_utils._load_img_as_tensor (io_utils.py:330) resizes with torchvision, which the CPU build's
stand-in lacks. torchvision's resize of a PIL image is PIL's bilinear resize, and to_tensor divides the uint8
array by 255 in float32: this does both with PIL and numpy, the same values.

`load_frames`: Sam3VideoInference.init_state (sam3_video_inference.py:62) keeps frames on CUDA in float16 for its
bf16 autocast. Without CUDA they stay on the CPU, and without autocast float16 frames reach float32 convolutions,
which refuse them: the frames SAM3 loads (its own float16 normalisation) come back as float32.

replace: sam3.model.io_utils:_load_img_as_tensor                           with: load_image
replace: sam3.model.sam3_video_inference:load_resource_as_video_frames     with: load_frames
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def load_image(img_path, image_size):
    img = Image.open(img_path).convert("RGB")
    orig_width, orig_height = img.width, img.height
    resized = np.asarray(img.resize((image_size, image_size), Image.BILINEAR), dtype=np.uint8)
    tensor = torch.from_numpy(resized.copy()).permute(2, 0, 1).float().div(255)
    return tensor, orig_height, orig_width


def load_frames(resource_path, image_size, offload_video_to_cpu, *args, **kwargs):
    from sam3.model import io_utils

    offload = offload_video_to_cpu or not torch.cuda.is_available()
    images, height, width = io_utils.load_resource_as_video_frames(resource_path, image_size, offload, *args, **kwargs)
    return images.float(), height, width
