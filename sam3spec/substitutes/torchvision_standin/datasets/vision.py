"""torchvision.datasets.vision.VisionDataset, subclassed by SAM3's training dataset."""

import torch

from sam3spec.substitutes.torchvision_standin._placeholder import module_getattr

__getattr__ = module_getattr(__name__)


class VisionDataset(torch.utils.data.Dataset):
    """torchvision.datasets.vision.VisionDataset, as far as SAM3's training dataset subclasses it."""

    def __init__(self, root=None, transforms=None, transform=None, target_transform=None):
        self.root, self.transforms = root, transforms
        self.transform, self.target_transform = transform, target_transform
