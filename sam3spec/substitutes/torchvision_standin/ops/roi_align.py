"""torchvision.ops.roi_align, as SAM3's decoder imports it."""

from sam3spec.substitutes.roi_align import RoIAlign, roi_align  # noqa: F401
