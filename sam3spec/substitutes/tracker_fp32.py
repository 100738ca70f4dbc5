"""Sam3TrackerPredictor.__init__ (sam3_tracking_predictor.py:49) enters a CUDA bfloat16 autocast for the rest of
the process. The port's contract is float32: this builds the tracker as SAM3 does, then leaves that autocast
(where CUDA is absent it was never on; torch disabled it with a warning).

replace: sam3.model.sam3_tracking_predictor:Sam3TrackerPredictor.__init__
with:    sam3spec.substitutes.tracker_fp32:tracker_init
"""

from __future__ import annotations

from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor

_ORIGINAL = Sam3TrackerPredictor.__init__


def tracker_init(self, *args, **kwargs):
    _ORIGINAL(self, *args, **kwargs)
    self.bf16_context.__exit__(None, None, None)
