"""torchvision.transforms.v2.functional: placeholders."""

from sam3spec.substitutes.torchvision_standin._placeholder import module_getattr

__getattr__ = module_getattr(__name__)
