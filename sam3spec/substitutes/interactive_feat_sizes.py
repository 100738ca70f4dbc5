"""sam1_task_predictor.py:64 hardcodes the feature sizes of a 1008 input; reduced variants need their own.

replace: sam3.model.sam1_task_predictor:SAM3InteractiveImagePredictor.__init__  with: predictor_init

The sizes follow from the model's image size and backbone stride (4x, 2x and 1x of image_size // stride),
which gives (288, 144, 72) at 1008: the same as the original there.
"""

from __future__ import annotations

import sam3.model_builder  # noqa: F401  (imported on its own, sam1_task_predictor is a circular import)
from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor

_original_init = SAM3InteractiveImagePredictor.__init__


def predictor_init(self, sam_model, *args, **kwargs):
    """SAM3InteractiveImagePredictor.__init__, then _bb_feat_sizes from sam_model.image_size."""
    _original_init(self, sam_model, *args, **kwargs)
    feat = sam_model.image_size // getattr(sam_model, "backbone_stride", 14)
    self._bb_feat_sizes = [(4 * feat, 4 * feat), (2 * feat, 2 * feat), (feat, feat)]
