"""torchvision.transforms: placeholders (SAM3's image processor, not the ported graph, uses them)."""

from sam3spec.substitutes.torchvision_standin._placeholder import module_getattr

__getattr__ = module_getattr(__name__)
