"""SAM3's own video inference (Sam3VideoInferenceWithInstanceInteractivity) with every network on compiled components.

:func:`compiled` swaps the video model's networks for stand-ins that call the compiled components, and
:func:`restore` puts SAM3's modules back. Everything else is SAM3's code, run unchanged: init_state, add_prompt,
propagate_in_video, the detector's grounding and NMS, association and its heuristics (hotstart, keep-alive,
suppression, reconditioning), the tracker's memory bank, and the output masks. :func:`track` runs one prompt over a
clip on either model (PyTorch, or the same model with the stand-ins installed), so both go through the same calls.

The stand-ins, each where SAM3 calls the module it replaces:
    detector.backbone            vit_trunk + neck (forward_image), text_encoder per caption (forward_text)
    detector's grounding steps   geometry_encoder, fusion_encoder, decoder + scoring_box_head, segmentation_head
    tracker.sam_prompt_encoder   sam_prompt_encoder per object (points), mask_prompt_encoder (mask prompts)
    tracker.sam_mask_decoder     tracker_mask_decoder per object (predict_masks); conv_s0 / conv_s1 are the
                                 compiled neck's (its sam outputs have them applied)
    tracker.transformer.encoder  memory_attention per object
    tracker.maskmem_backbone     memory_encoder (masks at the image size), memory_encoder_update (at 16x features)
    tracker.obj_ptr_proj, obj_ptr_tpos_proj, mask_downsample    object_pointer, pointer_position, mask_downsample
The prompt encoder's dense positional encoding is a constant of the weights: it is computed once, by SAM3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from sam3spec.apps import sam3_image

Run = Callable[..., tuple]
MAX_OBJECTS = 16  # the `objects` dim of the components that batch objects: more are run in chunks

COMPONENTS = sam3_image.GROUNDING + ["sam_prompt_encoder", "mask_prompt_encoder", "tracker_mask_decoder",
                                     "memory_attention", "memory_encoder", "memory_encoder_update", "object_pointer", "pointer_position",
                                     "mask_downsample"]


def components(prompt: dict) -> list[str]:
    """Every frame runs the detector and the tracker, whatever the prompt."""
    return list(COMPONENTS)


def _chunked(run: Run, name: str, *tensors) -> tuple:
    """`name` over the leading (objects) axis in chunks of at most MAX_OBJECTS, outputs concatenated."""
    parts = [run(name, *(t[i:i + MAX_OBJECTS] for t in tensors)) for i in range(0, tensors[0].shape[0], MAX_OBJECTS)]
    return tuple(torch.cat(outs) for outs in zip(*parts))


def _per_object(run: Run, name: str, tensors: list, shared: dict, axis: int | list[int] = 0) -> tuple:
    """`name` once per object (index along `axis` of each of `tensors`, or along axis[i] of tensors[i]; `shared`
    positions passed whole), the outputs joined along the first tensor's axis."""
    axes = [axis] * len(tensors) if isinstance(axis, int) else axis
    outs = []
    for b in range(tensors[0].shape[axes[0]]):
        args = [t.narrow(a, b, 1) for t, a in zip(tensors, axes)]
        for position, value in sorted(shared.items()):
            args.insert(position, value)
        outs.append(run(name, *args))
    return tuple(torch.cat(parts, dim=axes[0]) for parts in zip(*outs))


class _Backbone(nn.Module):
    """SAM3VLBackbone on vit_trunk + neck and text_encoder; the video model encodes two captions at once (its
    text and "visual"), which the compiled text_encoder takes one at a time."""

    def __init__(self, run: Run, tokenizer, text_len: int):
        super().__init__()
        self.image = sam3_image._Backbone(run, tokenizer, text_len)

    def forward_image(self, samples):
        return self.image.forward_image(samples)

    def forward_text(self, captions, input_boxes=None, additional_text=None, device=None):
        outs = [self.image.forward_text([caption]) for caption in captions]
        return {"language_features": torch.cat([o["language_features"] for o in outs], dim=1),
                "language_mask": torch.cat([o["language_mask"] for o in outs], dim=0),
                "language_embeds": torch.cat([o["language_embeds"] for o in outs], dim=1)}


class _PromptEncoder(nn.Module):
    """PromptEncoder as _forward_sam_heads calls it: points for B objects, an optional mask prompt."""

    def __init__(self, run: Run, original: nn.Module):
        super().__init__()
        self.run = run
        self.mask_input_size = original.mask_input_size
        self.image_embedding_size = original.image_embedding_size
        self.input_image_size = original.input_image_size
        with torch.no_grad():
            self.dense_pe = original.get_dense_pe()

    def forward(self, points, boxes=None, masks=None):
        if boxes is not None or points is None:
            raise ValueError("the tracker's compiled prompt encoder takes points (a box comes as two points)")
        coords, labels = points
        sparse, dense = _per_object(self.run, "sam_prompt_encoder", [coords, labels.to(torch.int32)], {})
        if masks is not None:
            (dense,) = _chunked(self.run, "mask_prompt_encoder", masks.float())
        return sparse, dense

    def get_dense_pe(self):
        return self.dense_pe


class _MemoryAttention(nn.Module):
    """transformer.encoder as _prepare_memory_conditioned_features calls it, one object at a time."""

    def __init__(self, run: Run):
        super().__init__()
        self.run = run

    def forward(self, src, src_key_padding_mask, src_pos, prompt, prompt_pos, prompt_key_padding_mask=None,
                feat_sizes=None, num_obj_ptr_tokens=0):
        x, pos = src[-1], src_pos[-1]
        tokens, count = x.shape[0], x.shape[1]
        pointers = int(num_obj_ptr_tokens)
        frames = (prompt.shape[0] - pointers) // tokens
        if pointers == 0 or frames * tokens + pointers != prompt.shape[0]:
            raise ValueError(f"memory of {prompt.shape[0]} tokens is not memory frames of {tokens} tokens plus "
                             f"{pointers} pointer tokens (the compiled memory_attention needs at least 4)")
        memory = prompt[:frames * tokens].reshape(frames, tokens, count, -1)
        memory_pos = prompt_pos[:frames * tokens].reshape(frames, tokens, count, -1)
        args = [x, pos, memory, memory_pos, prompt[frames * tokens:], prompt_pos[frames * tokens:]]
        (out,) = _per_object(self.run, "memory_attention", args, {}, axis=[1, 1, 2, 2, 1, 1])
        return {"memory": out}


def _memory_encoder_class():
    from sam3.model.memory import SimpleMaskEncoder

    class MemoryEncoder(SimpleMaskEncoder):
        """maskmem_backbone: a SimpleMaskEncoder to SAM3 (_encode_new_memory takes its branch for one), run by the
        compiled memory_encoder, which is that branch's call (skip_mask_sigmoid=True)."""

        def __init__(self, run: Run, original: nn.Module):
            nn.Module.__init__(self)
            self.run = run
            self.mask_downsampler = original.mask_downsampler  # sam3_video_base.py:1451 reads its interpol_size

        def forward(self, pix_feat, masks, skip_mask_sigmoid=False):
            if not skip_mask_sigmoid:
                raise ValueError("the compiled memory_encoder takes masks already activated (skip_mask_sigmoid=True)")
            # the tracker's own masks come at the image size; the video model's memory update (sam3_video_base.py
            # :1486) resizes them to the downsampler's interpol_size first, which its own component takes
            side = masks.shape[-1]
            name = "memory_encoder_update" if side == self.mask_downsampler.interpol_size[-1] else "memory_encoder"
            features, pos = _chunked(self.run, name, pix_feat, masks)
            return {"vision_features": features, "vision_pos_enc": [pos]}

    return MemoryEncoder


class _Compiled(nn.Module):
    """A module whose forward is one compiled component over the objects axis."""

    def __init__(self, run: Run, name: str):
        super().__init__()
        self.run, self.name = run, name

    def forward(self, x):
        return _chunked(self.run, self.name, x)[0]


def _predict_masks(run: Run):
    def predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                      repeat_image, high_res_features=None):
        if repeat_image:
            raise ValueError("the tracker passes batched image embeddings (repeat_image=False)")
        return _per_object(run, "tracker_mask_decoder",
                           [image_embeddings, sparse_prompt_embeddings, dense_prompt_embeddings, *high_res_features],
                           {1: image_pe})
    return predict_masks


# ---------------------------------------------------------------------------------------------------------
# installing and removing the stand-ins
# ---------------------------------------------------------------------------------------------------------

DETECTOR_STEPS = ("_encode_prompt", "_run_encoder", "_run_decoder", "_run_segmentation_heads")


@dataclass
class Installed:
    """What :func:`compiled` replaced, for :func:`restore`."""

    modules: list = field(default_factory=list)      # (owner, name, original module)
    attributes: list = field(default_factory=list)   # (owner, name) set on the instance


def compiled(model, run: Run, sizes: dict, bpe_path: str) -> Installed:
    """Install the compiled stand-ins in SAM3's video model (in place); :func:`restore` undoes it."""
    from sam3.model.tokenizer_ve import SimpleTokenizer

    detector, tracker = model.detector, model.tracker
    done = Installed()

    def module(owner, name, new):
        done.modules.append((owner, name, getattr(owner, name)))
        setattr(owner, name, new)

    def attribute(owner, name, value):
        done.attributes.append((owner, name))
        object.__setattr__(owner, name, value)

    module(detector, "backbone", _Backbone(run, SimpleTokenizer(bpe_path=bpe_path), sizes["text_len"]))
    attribute(detector, "run", run)
    for name in DETECTOR_STEPS:
        attribute(detector, name, getattr(sam3_image.CompiledSam3Image, name).__get__(detector))
    module(tracker, "sam_prompt_encoder", _PromptEncoder(run, tracker.sam_prompt_encoder))
    decoder = tracker.sam_mask_decoder
    module(decoder, "conv_s0", nn.Identity())
    module(decoder, "conv_s1", nn.Identity())
    attribute(decoder, "predict_masks", _predict_masks(run))
    module(tracker.transformer, "encoder", _MemoryAttention(run))
    module(tracker, "maskmem_backbone", _memory_encoder_class()(run, tracker.maskmem_backbone))
    module(tracker, "obj_ptr_proj", _Compiled(run, "object_pointer"))
    module(tracker, "obj_ptr_tpos_proj", _Compiled(run, "pointer_position"))
    module(tracker, "mask_downsample", _Compiled(run, "mask_downsample"))
    return done


def restore(installed: Installed) -> None:
    for owner, name in reversed(installed.attributes):
        del owner.__dict__[name]
    for owner, name, original in reversed(installed.modules):
        setattr(owner, name, original)


# ---------------------------------------------------------------------------------------------------------
# one prompt over a clip
# ---------------------------------------------------------------------------------------------------------


@dataclass
class FrameResult:
    """One frame's objects, as SAM3's propagate_in_video gives them, ids ascending."""

    ids: list[int]
    masks: np.ndarray   # [N, H, W] bool at the clip's size
    boxes: np.ndarray   # [N, 4] x0, y0, x1, y1 in pixels
    scores: np.ndarray  # [N] SAM3's object score (detection probability; 1.0 for a clicked object)


def track(model, video, prompt: dict, frame: int, on_frame=None, timings: dict | None = None) -> dict[int, FrameResult]:
    """Run `prompt` on frame `frame` of `video` (a frame folder, or a list of PIL frames) and propagate it forward
    to the clip's end with SAM3's API. prompt: {"text", "boxes": [[x0, y0, x1, y1]], "points": [[x, y, label]]}
    in pixels. on_frame(index, result) as SAM3 yields each frame (with a text prompt, after its hot-start delay);
    `timings` gets the seconds of the propagation alone (`propagate_s`) and its frame count."""
    import time

    with torch.inference_mode():
        state = model.init_state(video)
        width, height = state["orig_width"], state["orig_height"]
        points = prompt.get("points") or []
        if points:
            # a click on a clip no detection has run on: each frame's outputs start empty, as a propagation that
            # found nothing leaves them (add_tracker_new_points merges the clicked object into them)
            state["cached_frame_outputs"].update({t: {} for t in range(state["num_frames"])})
            model.add_prompt(state, frame, points=torch.tensor([[x / width, y / height] for x, y, _ in points]),
                             point_labels=torch.tensor([int(label) for _, _, label in points]), obj_id=1)
        else:
            boxes = prompt.get("boxes") or []
            xywh = [[x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height] for x0, y0, x1, y1 in boxes]
            model.add_prompt(state, frame, text_str=prompt.get("text") or None, boxes_xywh=xywh or None,
                             box_labels=[1] * len(xywh) if xywh else None)
        results = {}
        start = time.perf_counter()
        for index, out in model.propagate_in_video(state, start_frame_idx=frame,
                                                   max_frame_num_to_track=state["num_frames"], reverse=False):
            boxes = out["out_boxes_xywh"].astype(np.float64) * [width, height, width, height]
            boxes[:, 2:] += boxes[:, :2]
            results[index] = FrameResult([int(i) for i in out["out_obj_ids"]], out["out_binary_masks"].astype(bool),
                                         boxes.astype(np.float32), out["out_probs"].astype(np.float32))
            if on_frame is not None:
                on_frame(index, results[index])
        if timings is not None:
            timings.update(propagate_s=time.perf_counter() - start, frames=len(results))
    return results
