"""The tracker keeps its state on CUDA (sam3_tracking_predictor.py:81) and moves memories back with `.cuda()`
(sam3_tracker_base.py:657, 664; sam3_tracking_predictor.py:303, 1026), which raise without a GPU.

`init_state` stores the state on the model's device when that is not CUDA; `tensor_cuda` makes `.cuda()` on a
CPU-only machine return the tensor where it is (the model's device: there is no other). Both change where
tensors live, never their values, and leave CUDA machines as they were.

replace: sam3.model.sam3_tracking_predictor:Sam3TrackerPredictor.init_state   with: init_state
replace: torch:Tensor.cuda                                                     with: tensor_cuda
"""

from __future__ import annotations

import torch
from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor

_ORIGINAL_CUDA = getattr(torch.Tensor.cuda, "_sam3spec_original", torch.Tensor.cuda)


def tensor_cuda(self, *args, **kwargs):
    if torch.cuda.is_available():
        return _ORIGINAL_CUDA(self, *args, **kwargs)
    return self


tensor_cuda._sam3spec_original = _ORIGINAL_CUDA


_original_init_state = Sam3TrackerPredictor.init_state


def init_state(self, *args, **kwargs):
    if self.device.type != "cuda":
        kwargs["offload_state_to_cpu"] = True  # storage on the CPU, where the model is
    return _original_init_state(self, *args, **kwargs)
