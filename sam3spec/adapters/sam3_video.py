"""SAM3's video model (`Sam3VideoInferenceWithInstanceInteractivity`) as the components' adapters see it.

The video model holds a detector (`Sam3ImageOnVideoMultiGPU`, a `Sam3Image`) and a tracker
(`Sam3TrackerPredictor`); SAM3's image builder nests the same tracker (`build_tracker`) in the image model as
`inst_interactive_predictor.model`. :func:`image_view` gives the video model that image model's shape, so the
image manifest's adapters (:mod:`.sam3_image`) and the tracker's (:mod:`.sam3_tracker`) run on it unchanged,
mounting the very same modules. Named by the manifest as `model.view`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from sam3spec.adapters.sam3_image import _Container


def image_view(model: nn.Module) -> nn.Module:
    """The detector's modules and attributes, with `inst_interactive_predictor.model` the tracker. A shallow
    view: the video model is not changed, and no parameter is copied."""
    detector = model.detector
    view = copy.copy(detector)
    # nn.Module keeps its children in these dicts: the view gets its own, so adding the tracker leaves the
    # detector as it was
    view._modules = dict(detector._modules)
    view._parameters = dict(detector._parameters)
    view._buffers = dict(detector._buffers)
    holder = _Container()
    holder.add_module("model", model.tracker)
    view.inst_interactive_predictor = holder
    return view


def load_checkpoint(model: nn.Module, path: str) -> None:
    """SAM3's checkpoint (`detector.*` and `tracker.*` keys) into the video model, strictly, as
    `build_sam3_video_model` loads it (model_builder.py:776-791)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if "model" in ckpt and isinstance(ckpt["model"], dict):
        ckpt = ckpt["model"]
    model.load_state_dict(ckpt, strict=True)
