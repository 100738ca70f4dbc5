"""SAM3's own image pipeline (Sam3Processor; Sam3Image.predict_inst) with every neural step on compiled components.

`CompiledSam3Image` stands in for `Sam3Image` exactly where SAM3's processor and interactive predictor call
it: `backbone.forward_image` / `forward_text`, `forward_grounding`'s four steps, and the interactive
predictor's prompt encoder and mask decoder. Everything else is SAM3's code, run unchanged: the processor's
resize and normalisation, the tokenizer, `Sam3Image.forward_grounding`, `_get_img_feats`, `predict_inst`,
`SAM3InteractiveImagePredictor` (point transforms, hole filling, mask upsampling), score filtering and box
scaling. `predict(model, image, prompt, threshold)` runs one prompt on either model: the real `Sam3Image`
(PyTorch) or a `CompiledSam3Image` (TVM), so the two are compared through the same calls.

`run(name, *tensors) -> tuple of tensors` executes one component as the manifest declares it (see
sam3spec/adapters/sam3_image.py for each component's inputs and outputs). sam3 is imported inside the
functions: the manifest's import-phase substitutions must be applied first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

Run = Callable[..., tuple]


@dataclass
class Detections:
    """What one prompt gives, at the original image size, best first as SAM3 orders them."""

    masks: np.ndarray   # [N, H, W] bool
    boxes: np.ndarray   # [N, 4] float: x0, y0, x1, y1 in pixels
    scores: np.ndarray  # [N] float: detection probability (grounding) or predicted mask IoU (interactive)
    path: str           # "grounding" (Sam3Processor) or "interactive" (Sam3Image.predict_inst)


# ---------------------------------------------------------------------------------------------------------
# the compiled stand-in
# ---------------------------------------------------------------------------------------------------------


class _Backbone:
    """SAM3VLBackbone.forward_image / forward_text on the compiled vit_trunk + neck and text_encoder."""

    def __init__(self, run: Run, tokenizer, text_len: int):
        self.run, self.tokenizer, self.text_len = run, tokenizer, text_len

    def forward_image(self, samples):
        (trunk,) = self.run("vit_trunk", samples)
        fpn0, fpn1, fpn2, pos0, pos1, pos2, sam0, sam1, sam2 = self.run("neck", trunk)
        pos = [pos0, pos1, pos2]  # the sam2 branch's sine encodings are the same tensors
        return {"vision_features": fpn2, "vision_pos_enc": pos, "backbone_fpn": [fpn0, fpn1, fpn2],
                "sam2_backbone_out": {"vision_features": sam2, "vision_pos_enc": list(pos),
                                      "backbone_fpn": [sam0, sam1, sam2]}}

    def forward_text(self, captions, input_boxes=None, additional_text=None, device=None):
        if len(captions) != 1 or input_boxes is not None or additional_text is not None:
            raise ValueError("the compiled text_encoder takes one caption")
        tokens = self.tokenizer(captions, context_length=self.text_len)
        mask, memory, embeds = self.run("text_encoder", tokens)
        return {"language_features": memory, "language_mask": mask, "language_embeds": embeds}


def _identity(x):
    return x


class _SamPromptEncoder:
    """sam_prompt_encoder on the compiled component (points only: _predict passes a box as two points)."""

    def __init__(self, run: Run):
        self.run = run

    def __call__(self, points, boxes=None, masks=None):
        if boxes is not None or masks is not None or points is None:
            raise ValueError("the compiled sam_prompt_encoder takes points only (no mask input)")
        coords, labels = points
        return self.run("sam_prompt_encoder", coords, labels.to(torch.int32))

    def get_dense_pe(self):
        return None  # the compiled sam_mask_decoder computes the dense positional encoding itself


class _SamMaskDecoder:
    """sam_mask_decoder on the compiled component. conv_s0 / conv_s1 are identities because the compiled
    neck already applied them (Sam3Processor.set_image calls them on its output)."""

    conv_s0 = conv_s1 = staticmethod(_identity)

    def __init__(self, run: Run):
        self.run = run

    def __call__(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                 multimask_output, repeat_image, high_res_features):
        if not multimask_output or repeat_image:
            raise ValueError("the compiled sam_mask_decoder is built with multimask_output=True, one object")
        return self.run("sam_mask_decoder", image_embeddings, *high_res_features, sparse_prompt_embeddings,
                        dense_prompt_embeddings)


class _Tracker:
    """The part of Sam3TrackerBase that SAM3InteractiveImagePredictor and predict_inst read."""

    num_feature_levels = 3
    device = torch.device("cpu")

    def __init__(self, run: Run, image_size: int):
        from sam3.model.sam3_tracker_base import Sam3TrackerBase

        self.image_size = image_size
        self.sam_prompt_encoder = _SamPromptEncoder(run)
        self.sam_mask_decoder = _SamMaskDecoder(run)
        self.no_mem_embed = torch.zeros(1, 1, 1)  # the compiled sam_mask_decoder adds the real one
        self._prepare_backbone_features = Sam3TrackerBase._prepare_backbone_features.__get__(self)


def _padded(values, mask, labels, width: int):
    """A prompt sequence [n,1,width] with at least one entry: the compiled geometry_encoder has n >= 1, and an
    entry masked as padding (mask True) is what Prompt itself uses for absent ones."""
    if values.shape[0] > 0:
        return values, labels.long(), mask
    return torch.zeros(1, 1, width), torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool)


class CompiledSam3Image:
    """Sam3Image for Sam3Processor and predict_inst, each neural step a compiled component."""

    training = False
    num_interactive_steps_val = 0
    num_feature_levels = 1  # the components are cut for SAM3's single image level (fpn2)
    device = torch.device("cpu")

    def __init__(self, run: Run, *, image_size: int, text_len: int, tokenizer):
        from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor
        from sam3.model.sam3_image import Sam3Image

        self.run = run
        self.backbone = _Backbone(run, tokenizer, text_len)
        self.inst_interactive_predictor = SAM3InteractiveImagePredictor(_Tracker(run, image_size))
        # SAM3's own orchestration, called with this object as `self`
        for name in ("forward_grounding", "_get_img_feats", "_get_dummy_prompt", "predict_inst"):
            setattr(self, name, getattr(Sam3Image, name).__get__(self))

    def _encode_prompt(self, backbone_out, find_input, geometric_prompt, visual_prompt_embed=None,
                       visual_prompt_mask=None, encode_text=True, prev_mask_pred=None):
        if visual_prompt_embed is not None or not encode_text or prev_mask_pred is not None:
            raise ValueError("the compiled geometry_encoder takes text, boxes and points only")
        if geometric_prompt.mask_embeddings is not None:
            raise ValueError("the compiled geometry_encoder takes no mask prompt")
        txt_feats = backbone_out["language_features"][:, find_input.text_ids]
        txt_masks = backbone_out["language_mask"][find_input.text_ids]
        backbone_out, img_feats, img_pos, _ = self._get_img_feats(backbone_out, find_input.img_ids)
        g = geometric_prompt
        boxes = _padded(g.box_embeddings, g.box_mask, g.box_labels, 4)
        points = _padded(g.point_embeddings, g.point_mask, g.point_labels, 2)
        prompt, prompt_mask = self.run("geometry_encoder", img_feats[-1], img_pos[-1], txt_feats, txt_masks,
                                       *boxes, *points)
        return prompt, prompt_mask, backbone_out

    def _run_encoder(self, backbone_out, find_input, prompt, prompt_mask, encoder_extra_kwargs=None):
        feat_tuple = self._get_img_feats(backbone_out, find_input.img_ids)
        backbone_out, img_feats, img_pos, sizes = feat_tuple
        memory, memory_pos = self.run("fusion_encoder", img_feats[-1], img_pos[-1], prompt, prompt_mask)
        encoder_out = {"encoder_hidden_states": memory, "pos_embed": memory_pos, "padding_mask": None,
                       "vis_feat_sizes": sizes, "prompt_before_enc": prompt, "prompt_after_enc": prompt,
                       "prompt_mask": prompt_mask}
        return backbone_out, encoder_out, feat_tuple

    def _run_decoder(self, pos_embed, memory, src_mask, out, prompt, prompt_mask, encoder_out):
        hs, ref_boxes, presence = self.run("decoder", memory, pos_embed, prompt, prompt_mask)
        logits, boxes, boxes_xyxy, presence_logit = self.run("scoring_box_head", hs, ref_boxes, presence,
                                                              prompt, prompt_mask)
        out.update(queries=hs[-1], pred_logits=logits, pred_boxes=boxes, pred_boxes_xyxy=boxes_xyxy,
                   presence_logit_dec=presence_logit)
        return out, hs

    def _run_segmentation_heads(self, out, backbone_out, img_ids, vis_feat_sizes, encoder_hidden_states,
                                prompt, prompt_mask, hs):
        out["pred_masks"], out["semantic_seg"] = self.run("segmentation_head", *backbone_out["backbone_fpn"], hs,
                                                          encoder_hidden_states, prompt, prompt_mask)


def compiled(run: Run, sizes: dict, bpe_path: str) -> CompiledSam3Image:
    """The compiled model for the manifest's `sizes` (image, text_len), with SAM3's tokenizer."""
    from sam3.model.tokenizer_ve import SimpleTokenizer

    return CompiledSam3Image(run, image_size=sizes["image"], text_len=sizes["text_len"],
                             tokenizer=SimpleTokenizer(bpe_path=bpe_path))


# ---------------------------------------------------------------------------------------------------------
# which components a prompt needs, and whether they were built for it
# ---------------------------------------------------------------------------------------------------------

GROUNDING = ["vit_trunk", "neck", "text_encoder", "geometry_encoder", "fusion_encoder", "decoder",
             "scoring_box_head", "segmentation_head"]
INTERACTIVE = ["vit_trunk", "neck", "sam_prompt_encoder", "sam_mask_decoder"]


def components(prompt: dict) -> list[str]:
    return INTERACTIVE if prompt.get("points") else GROUNDING


def check(prompt: dict, dims: dict) -> str | None:
    """Why the compiled components cannot take `prompt` (their dims' max), or None."""
    boxes, points = prompt.get("boxes") or [], prompt.get("points") or []
    if points and prompt.get("text"):
        return "points take the interactive path, which has no text prompt; give --text or --point, not both"
    if points:
        if len(boxes) > 1:
            return "the interactive path takes at most one box with points"
        clicks = len(points) + 2 * len(boxes)  # a box is two corner points
        if clicks > dims["clicks"]["max"]:
            return f"{clicks} clicks (points + 2 per box) but the compiled sam_prompt_encoder takes at most {dims['clicks']['max']}"
    elif len(boxes) > dims["boxes"]["max"]:
        return f"{len(boxes)} boxes but the compiled geometry_encoder takes at most {dims['boxes']['max']}"
    return None


# ---------------------------------------------------------------------------------------------------------
# one prompt, on either model
# ---------------------------------------------------------------------------------------------------------


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """[N, H, W] bool -> [N, 4] x0, y0, x1, y1 around each mask, x1 / y1 exclusive (zeros for an empty mask).
    sam3's box_ops.masks_to_boxes does this but fails unless N is 4 (its last line broadcasts [N] on [N, 4])."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if rows.size:
            boxes[i] = cols[0], rows[0], cols[-1] + 1, rows[-1] + 1
    return boxes


def predict(model, image, prompt: dict, threshold: float) -> Detections:
    """Run `prompt` on a PIL `image` through SAM3's processor.

    prompt: {"text": str or None, "boxes": [[x0, y0, x1, y1], ...], "points": [[x, y, label], ...]} in
    pixels of `image`. With points, the interactive path (`predict_inst`, three masks; a box, at most one,
    joins them as SAM's box prompt). Otherwise the grounding path: the text (or "visual", as
    `add_geometric_prompt` uses) with the boxes as positive exemplars, detections scoring above `threshold`.
    """
    from sam3.model.sam3_image_processor import Sam3Processor

    predictor = model.inst_interactive_predictor
    processor = Sam3Processor(model, resolution=predictor.model.image_size, device="cpu",
                              confidence_threshold=threshold)
    state = processor.set_image(image)
    boxes, points = prompt.get("boxes") or [], prompt.get("points") or []
    with torch.inference_mode():
        if points:
            masks, scores, _ = model.predict_inst(
                state, point_coords=np.array([p[:2] for p in points], dtype=np.float32),
                point_labels=np.array([p[2] for p in points], dtype=np.int32),
                box=np.array(boxes[0], dtype=np.float32) if boxes else None, multimask_output=True)
            masks = masks.astype(bool)
            return Detections(masks, mask_boxes(masks), scores, "interactive")
        # Sam3Processor.add_geometric_prompt, for each box (normalised cx, cy, w, h; label True)
        state["geometric_prompt"] = model._get_dummy_prompt()
        width, height = image.size
        for x0, y0, x1, y1 in boxes:
            box = [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]
            state["geometric_prompt"].append_boxes(torch.tensor(box, dtype=torch.float32).view(1, 1, 4),
                                                   torch.tensor([True]).view(1, 1))
        state = processor.set_text_prompt(prompt.get("text") or "visual", state)
    return Detections(state["masks"][:, 0].numpy(), state["boxes"].numpy(), state["scores"].numpy(), "grounding")
