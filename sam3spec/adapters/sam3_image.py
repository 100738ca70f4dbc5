"""Adapters that cut SAM3's image model (`sam3.model.sam3_image.Sam3Image`) into exportable components.

Each public function `<component>(model) -> nn.Module` returns a module whose `forward` takes only plain
tensors (positional) and returns a tuple of plain tensors. It holds the *same* submodules as the built model
(no copies, no re-implemented SAM3 math), mounted at the same dotted paths, so the exported program's
parameter names are the model's own `state_dict` keys (e.g. `transformer.decoder.layers.0.norm1.weight`).
Only the submodules a component uses are mounted: torch.export lifts every parameter of the root module,
used or not. Where a SAM3 method is called, it is called as the unbound function with the adapter as `self`
(`Sam3Image._run_segmentation_heads(self, ...)`); the adapter carries the few plain attributes it reads.

Inference path reproduced (Sam3Processor.set_image / set_text_prompt / add_geometric_prompt ->
Sam3Image.forward_grounding; Sam3Image.predict_inst -> SAM3InteractiveImagePredictor._predict):

    image [1,3,S,S] --vit_trunk--> trunk [1,1024,F,F]                       (F = S/14; 72 at S=1008)
    trunk --neck--> fpn0..2, pos0..2 (scalp=1 drops the 0.5x level), sam2_fpn0..2 (set_image's conv_s0/s1
                    already applied; the sam2 position encodings equal pos0..2 and are not returned)
    tokens [1,32] --text_encoder--> text_mask [1,32] bool, text_memory [32,1,256], text_embeds [32,1,1024]
    img = fpn2.flatten(2).permute(2,0,1) [HW,1,256], img_pos likewise from pos2     (glue: _get_img_feats)
    geometry_encoder(img, img_pos, text_memory, text_mask, boxes.., points..) -> prompt [L,1,256],
                    prompt_mask [1,L]  (L = 32 + Np + Nb + 1: text, points, boxes, cls; _encode_prompt)
    fusion_encoder(img, img_pos, prompt, prompt_mask) -> memory [HW,1,256], memory_pos [HW,1,256]
    decoder(memory, memory_pos, prompt, prompt_mask) -> hs [NL,1,Q,256], ref_boxes [NL,1,Q,4],
                    presence [NL,1,1]                                        (Q = 200 queries)
    scoring_box_head(hs, ref_boxes, presence, prompt, prompt_mask) -> pred_logits [1,Q,1],
                    pred_boxes [1,Q,4] cxcywh, pred_boxes_xyxy [1,Q,4], presence_logit [1,1]
    segmentation_head(fpn0, fpn1, fpn2, hs, memory, prompt, prompt_mask) -> pred_masks [1,Q,4F,4F],
                    semantic_seg [1,1,4F,4F]
    sam_prompt_encoder(coords [1,N,2] pixels in [0,S], labels [1,N] int32) -> sparse [1,N+1,256],
                    dense [1,256,F,F]
    sam_mask_decoder(sam2_fpn2, sam2_fpn0, sam2_fpn1, sparse, dense) -> low_res_masks [1,3,4F,4F],
                    iou [1,3], sam_tokens [1,3,256], object_score_logits [1,1]   (multimask_output=True)

The processor's score is `sigmoid(pred_logits) * sigmoid(presence_logit)`; thresholding, box scaling and
mask upsampling to the original image size stay in Python, as does tokenisation.

`SPECS` / `input_specs(model)` give every component's inputs (name, shape, dtype, sampling rule) and
outputs; `sample_inputs` draws inputs from them; `DIMS` names the dynamic dimensions. `TINY_OVERRIDES`
and `build_model` give the reduced test variant (reference builder for tests; the pipeline has its own).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

COMPONENTS = (
    "vit_trunk",
    "neck",
    "text_encoder",
    "geometry_encoder",
    "fusion_encoder",
    "decoder",
    "scoring_box_head",
    "segmentation_head",
    "sam_prompt_encoder",
    "sam_mask_decoder",
)


# --------------------------------------------------------------------------------------------------------
# mounting shared submodules at their own dotted paths
# --------------------------------------------------------------------------------------------------------


class _Container(nn.Module):
    """An empty module standing for one level of a dotted path (e.g. `backbone` in `backbone.x.y`)."""

    def forward(self, *args, **kwargs):  # pragma: no cover - never called
        raise RuntimeError("path container, not callable")


def _owner(root: nn.Module, path: str) -> tuple:
    """Create (or reuse) containers for every level of `path` but the last; return (owner, leaf name)."""
    *parents, leaf = path.split(".")
    owner = root
    for name in parents:
        child = owner._modules.get(name)
        if child is None:
            child = _Container()
            owner.add_module(name, child)
        owner = child
    return owner, leaf


def _get(model: nn.Module, path: str):
    obj = model
    for name in path.split("."):
        obj = obj[int(name)] if isinstance(obj, (nn.ModuleList, nn.Sequential)) and name.isdigit() else getattr(obj, name)
    return obj


def _mount(root: nn.Module, model: nn.Module, path: str) -> None:
    """Make `root.<path>` the very object `model.<path>` (a module or a parameter), not a copy."""
    value = _get(model, path)
    owner, leaf = _owner(root, path)
    if isinstance(value, nn.Parameter):
        owner.register_parameter(leaf, value)
    elif isinstance(value, nn.Module):
        owner.add_module(leaf, value)
    else:
        raise TypeError(f"{path} is neither a module nor a parameter: {type(value).__name__}")


def _copy_attr(root: nn.Module, model: nn.Module, path: str) -> None:
    """Copy a plain (non-module) attribute `model.<path>` onto `root.<path>`, e.g. a config flag."""
    value = _get(model, path)
    assert value is None or not isinstance(value, (nn.Module, Tensor)), path
    owner, leaf = _owner(root, path)
    setattr(owner, leaf, value)


class _Adapter(nn.Module):
    def __init__(self, model: nn.Module, mounts: Sequence[str], attrs: Sequence[str] = ()):
        super().__init__()
        for path in mounts:
            _mount(self, model, path)
        for path in attrs:
            _copy_attr(self, model, path)
        # containers are new modules: follow the model's mode (eval for inference)
        self.train(model.training)


# --------------------------------------------------------------------------------------------------------
# static sizes
# --------------------------------------------------------------------------------------------------------


def feat_size(model: nn.Module) -> int:
    """Side of the stride-14 feature map (72 at S=1008), from the trunk's global-attention RoPE table."""
    trunk = model.backbone.vision_backbone.trunk
    return int(trunk.blocks[trunk.full_attn_ids[-1]].attn.input_size[0])


def image_size(model: nn.Module) -> int:
    trunk = model.backbone.vision_backbone.trunk
    return feat_size(model) * int(trunk.patch_embed.proj.stride[0])


def sizes(model: nn.Module) -> Dict[str, int]:
    """Named static sizes used in SPECS shapes."""
    f = feat_size(model)
    dec = model.transformer.decoder
    return {
        "S": image_size(model),
        "F": f,
        "F2": 2 * f,
        "F4": 4 * f,
        "HW": f * f,
        "T": int(model.backbone.language_backbone.context_length),  # 32 text tokens
        "Q": int(dec.num_queries),  # 200 object queries
        "NL": int(dec.num_layers),  # decoder layers (6 full size)
    }


def _warm_posenc_cache(model: nn.Module) -> None:
    """Fill PositionEmbeddingSine.cache for the neck's level sizes with real tensors, as a first forward
    would. Otherwise the first call made under torch.export would store a fake tensor in that cache."""
    pe = model.backbone.vision_backbone.position_encoding
    f = feat_size(model)
    for side in (4 * f, 2 * f, f, f // 2):
        if (side, side) not in pe.cache:
            pe(torch.zeros(1, 1, side, side))


# --------------------------------------------------------------------------------------------------------
# components
# --------------------------------------------------------------------------------------------------------


class _VitTrunk(_Adapter):
    def forward(self, image: Tensor):
        return (self.backbone.vision_backbone.trunk(image)[-1],)


def vit_trunk(model) -> nn.Module:
    """image [1,3,S,S] float32 (normalised to [-1,1]) -> trunk features [1,1024,F,F]."""
    return _VitTrunk(model, ["backbone.vision_backbone.trunk"])


class _Neck(_Adapter):
    def __init__(self, model):
        neck = model.backbone.vision_backbone
        num_levels = len(neck.convs) - model.backbone.scalp
        with_sam2 = neck.sam2_convs is not None and model.inst_interactive_predictor is not None
        mounts = [f"backbone.vision_backbone.convs.{i}" for i in range(num_levels)]
        mounts.append("backbone.vision_backbone.position_encoding")
        if with_sam2:
            mounts += [f"backbone.vision_backbone.sam2_convs.{i}" for i in range(num_levels)]
            mounts += [
                "inst_interactive_predictor.model.sam_mask_decoder.conv_s0",
                "inst_interactive_predictor.model.sam_mask_decoder.conv_s1",
            ]
        _warm_posenc_cache(model)
        super().__init__(model, mounts)
        self.num_levels, self.with_sam2 = num_levels, with_sam2

    def forward(self, x: Tensor):
        # Sam3DualViTDetNeck.forward after the trunk, SAM3VLBackbone scalp, Sam3Processor.set_image
        neck = self.backbone.vision_backbone
        feats, pos, sam2 = [], [], []
        for i in range(self.num_levels):
            out = neck.convs.get_submodule(str(i))(x)
            feats.append(out)
            pos.append(neck.position_encoding(out).to(out.dtype))
            if self.with_sam2:
                sam2.append(neck.sam2_convs.get_submodule(str(i))(x))
        if self.with_sam2:
            dec = self.inst_interactive_predictor.model.sam_mask_decoder
            sam2[0] = dec.conv_s0(sam2[0])
            sam2[1] = dec.conv_s1(sam2[1])
        return (*feats, *pos, *sam2)


def neck(model) -> nn.Module:
    """trunk [1,1024,F,F] -> fpn0 [1,256,4F,4F], fpn1 [1,256,2F,2F], fpn2 [1,256,F,F], pos0..2 (same
    shapes; sine encodings, constant for a given S), and, with instance interactivity, sam2_fpn0
    [1,32,4F,4F], sam2_fpn1 [1,64,2F,2F], sam2_fpn2 [1,256,F,F] (conv_s0 / conv_s1 applied as in
    Sam3Processor.set_image). The 0.5x level is dropped (scalp=1), so it is not computed."""
    return _Neck(model)


class _GivenTokens:
    """Stands in for the BPE tokenizer during one call: returns the token ids handed to the adapter."""

    def __init__(self, ids: Tensor):
        self.ids = ids

    def __call__(self, texts, context_length=None):
        assert context_length is None or self.ids.shape[-1] == context_length
        return self.ids


class _TextEncoder(_Adapter):
    def forward(self, tokens: Tensor):
        from sam3.model.vl_combiner import SAM3VLBackbone

        enc = self.backbone.language_backbone
        tokenizer = enc.tokenizer
        enc.tokenizer = _GivenTokens(tokens)  # the tokenizer stays in Python; ids come in as a tensor
        try:
            out = SAM3VLBackbone._forward_text_no_ack_ckpt(
                self.backbone, ["<token ids>"] * tokens.shape[0], device=tokens.device
            )
        finally:
            enc.tokenizer = tokenizer
        return out["language_mask"], out["language_features"], out["language_embeds"]


def text_encoder(model) -> nn.Module:
    """tokens [1,32] int64 (tokenizer(["a cat"], context_length=32)) -> text_mask [1,32] bool (True =
    padding), text_memory [32,1,256], text_embeds [32,1,1024] (token embeddings before the encoder)."""
    return _TextEncoder(model, ["backbone.language_backbone"])


class _GeometryEncoder(_Adapter):
    def __init__(self, model):
        super().__init__(model, ["geometry_encoder"])
        self.feat = feat_size(model)

    def forward(self, img_feats, img_pos, text_memory, text_mask, boxes, box_labels, box_mask, points,
                point_labels, point_mask):
        from sam3.model.geometry_encoders import Prompt

        geo = Prompt(
            box_embeddings=boxes,
            box_mask=box_mask,
            box_labels=box_labels,
            point_embeddings=points,
            point_mask=point_mask,
            point_labels=point_labels,
        )
        # Sam3Image._encode_prompt (text_ids = img_ids = [0], no visual prompt)
        geo_feats, geo_masks = self.geometry_encoder(
            geo_prompt=geo,
            img_feats=[img_feats],
            img_sizes=[(self.feat, self.feat)],
            img_pos_embeds=[img_pos],
        )
        visual_prompt_embed = torch.zeros((0, *geo_feats.shape[1:]), device=geo_feats.device)
        visual_prompt_mask = torch.zeros(
            (*geo_masks.shape[:-1], 0), device=geo_masks.device, dtype=geo_masks.dtype
        )
        prompt = torch.cat([text_memory, geo_feats, visual_prompt_embed], dim=0)
        prompt_mask = torch.cat([text_mask, geo_masks, visual_prompt_mask], dim=1)
        return prompt, prompt_mask


def geometry_encoder(model) -> nn.Module:
    """img_feats, img_pos [HW,1,256] (fpn2 / pos2 flattened seq-first), text_memory [32,1,256],
    text_mask [1,32] bool, boxes [Nb,1,4] cxcywh in [0,1], box_labels [Nb,1] int64 (1 pos, 0 neg),
    box_mask [1,Nb] bool (True = padding), points [Np,1,2] xy in [0,1], point_labels [Np,1] int64,
    point_mask [1,Np] bool -> prompt [L,1,256], prompt_mask [1,L] bool, L = 32 + Np + Nb + 1
    (text, then the right-padded geometry sequence: points, boxes, cls). Nb, Np dynamic (needs the
    posenc_shape_len patch). Text-only prompting (Nb = Np = 0) = one box with box_mask True."""
    return _GeometryEncoder(model)


class _FusionEncoder(_Adapter):
    def __init__(self, model):
        super().__init__(model, ["transformer.encoder"])
        self.feat = feat_size(model)

    def forward(self, img_feats, img_pos, prompt, prompt_mask):
        # Sam3Image._run_encoder
        memory = self.transformer.encoder(
            src=[img_feats],
            src_key_padding_mask=None,
            src_pos=[img_pos],
            prompt=prompt,
            prompt_pos=torch.zeros_like(prompt),
            prompt_key_padding_mask=prompt_mask,
            feat_sizes=[(self.feat, self.feat)],
            encoder_extra_kwargs=None,
        )
        return memory["memory"], memory["pos_embed"]


def fusion_encoder(model) -> nn.Module:
    """img_feats, img_pos [HW,1,256], prompt [L,1,256], prompt_mask [1,L] bool -> memory [HW,1,256],
    memory_pos [HW,1,256] (the encoder's padding mask is None; `prompt_after_enc` is the prompt)."""
    return _FusionEncoder(model)


class _Decoder(_Adapter):
    def __init__(self, model):
        super().__init__(model, ["transformer.decoder"])
        self.feat = feat_size(model)
        assert model.transformer.decoder.compilable_stored_size in (None, (self.feat, self.feat))

    def forward(self, memory, memory_pos, prompt, prompt_mask):
        dec = self.transformer.decoder
        bs = memory.shape[1]
        # what TransformerEncoder._prepare_multilevel_features returns for one unpadded level
        spatial_shapes = torch.tensor([[self.feat, self.feat]], dtype=torch.long, device=memory.device)
        level_start_index = spatial_shapes.new_zeros((1,))
        valid_ratios = torch.ones((bs, 1, 2), device=memory.device)
        # Sam3Image._run_decoder up to _update_scores_and_boxes
        tgt = dec.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)
        hs, reference_boxes, dec_presence_out, _ = dec(
            tgt=tgt,
            memory=memory,
            memory_key_padding_mask=None,
            pos=memory_pos,
            reference_boxes=None,
            level_start_index=level_start_index,
            spatial_shapes=spatial_shapes,
            valid_ratios=valid_ratios,
            tgt_mask=None,
            memory_text=prompt,
            text_attention_mask=prompt_mask,
            apply_dac=dec.dac and self.training,
        )
        return hs.transpose(1, 2), reference_boxes.transpose(1, 2), dec_presence_out.transpose(1, 2)


def decoder(model) -> nn.Module:
    """memory, memory_pos [HW,1,256], prompt [L,1,256], prompt_mask [1,L] -> hs [NL,1,Q,256],
    ref_boxes [NL,1,Q,4] (sigmoid cxcywh), presence [NL,1,1] (all layers, batch-first as in
    _run_decoder). Needs the decoder_static_feat_size patch to export."""
    return _Decoder(model)


class _ScoringBoxHead(_Adapter):
    def forward(self, hs, ref_boxes, presence, prompt, prompt_mask):
        from sam3.model.sam3_image import Sam3Image

        out = {}
        Sam3Image._update_scores_and_boxes(self, out, hs, ref_boxes, prompt, prompt_mask, dec_presence_out=presence)
        return out["pred_logits"], out["pred_boxes"], out["pred_boxes_xyxy"], out["presence_logit_dec"]


def scoring_box_head(model) -> nn.Module:
    """hs [NL,1,Q,256], ref_boxes [NL,1,Q,4], presence [NL,1,1], prompt [L,1,256], prompt_mask [1,L]
    -> pred_logits [1,Q,1], pred_boxes [1,Q,4] cxcywh, pred_boxes_xyxy [1,Q,4], presence_logit [1,1]
    (last decoder layer; Sam3Image._update_scores_and_boxes)."""
    return _ScoringBoxHead(
        model,
        ["dot_prod_scoring", "transformer.decoder.bbox_embed"],
        [
            "use_dot_prod_scoring",
            "instance_dot_prod_scoring",
            "supervise_joint_box_scores",
            "detach_presence_in_joint_score",
            "transformer.decoder.dac",
            "transformer.decoder.instance_bbox_embed",
        ],
    )


class _SegmentationHead(_Adapter):
    def forward(self, fpn0, fpn1, fpn2, hs, memory, prompt, prompt_mask):
        from sam3.model.sam3_image import Sam3Image

        out = {}
        img_ids = torch.zeros(1, dtype=torch.long, device=hs.device)  # Sam3Processor.find_stage.img_ids
        Sam3Image._run_segmentation_heads(
            self,
            out=out,
            backbone_out={"backbone_fpn": [fpn0, fpn1, fpn2]},
            img_ids=img_ids,
            vis_feat_sizes=None,
            encoder_hidden_states=memory,
            prompt=prompt,
            prompt_mask=prompt_mask,
            hs=hs,
        )
        return out["pred_masks"], out["semantic_seg"]


def segmentation_head(model) -> nn.Module:
    """fpn0 [1,256,4F,4F], fpn1 [1,256,2F,2F], fpn2 [1,256,F,F] (only its shape is read: the head uses
    the encoder memory at that level), hs [NL,1,Q,256], memory [HW,1,256], prompt [L,1,256],
    prompt_mask [1,L] -> pred_masks [1,Q,4F,4F] logits, semantic_seg [1,1,4F,4F]."""
    return _SegmentationHead(
        model,
        ["segmentation_head"],
        ["o2m_mask_predict", "use_act_checkpoint_seg_head", "transformer.decoder.dac"],
    )


class _SamPromptEncoder(_Adapter):
    def forward(self, point_coords, point_labels):
        pe = self.inst_interactive_predictor.model.sam_prompt_encoder
        # SAM3InteractiveImagePredictor._predict with points only (no box, no mask input)
        sparse, dense = pe(points=(point_coords, point_labels), boxes=None, masks=None)
        return sparse, dense


def sam_prompt_encoder(model) -> nn.Module:
    """point_coords [1,N,2] float32 pixels in the S x S input frame, point_labels [1,N] int32 (1 pos,
    0 neg, 2/3 box corners, -1 pad) -> sparse [1,N+1,256] (a pad point is appended), dense [1,256,F,F].
    A box prompt is two points labelled 2, 3 placed first, as _predict does."""
    return _SamPromptEncoder(model, ["inst_interactive_predictor.model.sam_prompt_encoder"])


class _SamMaskDecoder(_Adapter):
    def __init__(self, model):
        super().__init__(
            model,
            [
                "inst_interactive_predictor.model.sam_mask_decoder",
                "inst_interactive_predictor.model.no_mem_embed",
                "inst_interactive_predictor.model.sam_prompt_encoder.pe_layer",
            ],
            ["inst_interactive_predictor.model.sam_prompt_encoder.image_embedding_size"],
        )
        self.feat = feat_size(model)

    def forward(self, image_embed, high_res_0, high_res_1, sparse, dense):
        from sam3.sam.prompt_encoder import PromptEncoder

        m = self.inst_interactive_predictor.model
        # Sam3Image.predict_inst: add no_mem_embed to the lowest-resolution level, seq-first
        feat = image_embed.flatten(2).permute(2, 0, 1) + m.no_mem_embed
        feat = feat.permute(1, 2, 0).view(1, -1, self.feat, self.feat)
        # SAM3InteractiveImagePredictor._predict
        low_res_masks, iou, sam_tokens, object_score = m.sam_mask_decoder(
            image_embeddings=feat,
            image_pe=PromptEncoder.get_dense_pe(m.sam_prompt_encoder),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
            repeat_image=False,
            high_res_features=[high_res_0, high_res_1],
        )
        return low_res_masks, iou, sam_tokens, object_score


def sam_mask_decoder(model) -> nn.Module:
    """image_embed [1,256,F,F] (neck's sam2_fpn2; no_mem_embed is added here), high_res_0 [1,32,4F,4F],
    high_res_1 [1,64,2F,2F] (sam2_fpn0/1), sparse [1,N+1,256], dense [1,256,F,F] -> low_res_masks
    [1,3,4F,4F] logits, iou [1,3], sam_tokens [1,3,256], object_score_logits [1,1]. multimask_output=True."""
    return _SamMaskDecoder(model)


# --------------------------------------------------------------------------------------------------------
# inputs: names, shapes, dtypes, sampling
# --------------------------------------------------------------------------------------------------------

# Dynamic dimensions. Export with the example (>= 2: torch.export specialises 0 and 1). Checked on the
# tiny variant: the exported geometry encoder reruns bit-equal to eager at Nb, Np = 1 and also at 0 (the
# processor's text-only prompt has Nb = Np = 0). The manifest schema wants min >= 1: a text-only prompt is
# then one box and one point with box_mask / point_mask True (padding), which gives the same detections
# (2.8e-7 max abs on the scores after geometry -> fusion -> decoder -> scoring, tiny variant).
DIMS = {
    "Nb": {"min": 1, "max": 16, "example": 2, "description": "box prompts"},
    "Np": {"min": 1, "max": 16, "example": 3, "description": "point prompts (PCS path; the processor sends 0)"},
    "L": {"min": 33, "max": 65, "example": 38, "description": "prompt length = T + Np + Nb + 1"},
    "N": {"min": 1, "max": 16, "example": 3, "description": "SAM clicks (box corners count as 2)"},
}

# Sampling rules (the manifest's vocabulary): normal(std), uniform(low, high), randint(low, high
# exclusive), zeros / ones (False / True for bool), boxes_cxcywh (valid boxes inside the unit square),
# tokens(text). A `low`/`high` given as a size name ("S") is resolved by input_specs(model, component).
# Feature inputs are unit normal; masks are all False (True everywhere would leave attention
# with no valid key: NaN); labels are 0/1.
_F32, _I64, _I32, _BOOL = "float32", "int64", "int32", "bool"
_NORMAL = {"kind": "normal", "std": 1.0}
_FALSE = {"kind": "zeros"}
_LABEL = {"kind": "randint", "low": 0, "high": 2}

SPECS: Dict[str, Dict[str, list]] = {
    "vit_trunk": {
        "inputs": [{"name": "image", "shape": [1, 3, "S", "S"], "dtype": _F32, "sample": {"kind": "uniform", "low": -1.0, "high": 1.0}}],
        "outputs": ["trunk"],
    },
    "neck": {
        "inputs": [{"name": "trunk", "shape": [1, 1024, "F", "F"], "dtype": _F32, "sample": _NORMAL}],
        "outputs": ["fpn0", "fpn1", "fpn2", "pos0", "pos1", "pos2", "sam2_fpn0", "sam2_fpn1", "sam2_fpn2"],
    },
    "text_encoder": {
        "inputs": [{"name": "tokens", "shape": [1, "T"], "dtype": _I64, "sample": {"kind": "tokens", "text": "a photo of a cat"}}],
        "outputs": ["text_mask", "text_memory", "text_embeds"],
    },
    "geometry_encoder": {
        "inputs": [
            {"name": "img_feats", "shape": ["HW", 1, 256], "dtype": _F32, "sample": _NORMAL},
            {"name": "img_pos", "shape": ["HW", 1, 256], "dtype": _F32, "sample": _NORMAL},
            {"name": "text_memory", "shape": ["T", 1, 256], "dtype": _F32, "sample": _NORMAL},
            {"name": "text_mask", "shape": [1, "T"], "dtype": _BOOL, "sample": _FALSE},
            {"name": "boxes", "shape": ["Nb", 1, 4], "dtype": _F32, "sample": {"kind": "boxes_cxcywh"}},
            {"name": "box_labels", "shape": ["Nb", 1], "dtype": _I64, "sample": _LABEL},
            {"name": "box_mask", "shape": [1, "Nb"], "dtype": _BOOL, "sample": _FALSE},
            {"name": "points", "shape": ["Np", 1, 2], "dtype": _F32, "sample": {"kind": "uniform", "low": 0.0, "high": 1.0}},
            {"name": "point_labels", "shape": ["Np", 1], "dtype": _I64, "sample": _LABEL},
            {"name": "point_mask", "shape": [1, "Np"], "dtype": _BOOL, "sample": _FALSE},
        ],
        "outputs": ["prompt", "prompt_mask"],
    },
    "fusion_encoder": {
        "inputs": [
            {"name": "img_feats", "shape": ["HW", 1, 256], "dtype": _F32, "sample": _NORMAL},
            {"name": "img_pos", "shape": ["HW", 1, 256], "dtype": _F32, "sample": _NORMAL},
            {"name": "prompt", "shape": ["L", 1, 256], "dtype": _F32, "sample": _NORMAL},
            {"name": "prompt_mask", "shape": [1, "L"], "dtype": _BOOL, "sample": _FALSE},
        ],
        "outputs": ["memory", "memory_pos"],
    },
    "decoder": {
        "inputs": [
            {"name": "memory", "shape": ["HW", 1, 256], "dtype": _F32, "sample": _NORMAL},
            {"name": "memory_pos", "shape": ["HW", 1, 256], "dtype": _F32, "sample": _NORMAL},
            {"name": "prompt", "shape": ["L", 1, 256], "dtype": _F32, "sample": _NORMAL},
            {"name": "prompt_mask", "shape": [1, "L"], "dtype": _BOOL, "sample": _FALSE},
        ],
        "outputs": ["hs", "ref_boxes", "presence"],
    },
    "scoring_box_head": {
        "inputs": [
            {"name": "hs", "shape": ["NL", 1, "Q", 256], "dtype": _F32, "sample": _NORMAL},
            {"name": "ref_boxes", "shape": ["NL", 1, "Q", 4], "dtype": _F32, "sample": {"kind": "boxes_cxcywh"}},
            {"name": "presence", "shape": ["NL", 1, 1], "dtype": _F32, "sample": _NORMAL},
            {"name": "prompt", "shape": ["L", 1, 256], "dtype": _F32, "sample": _NORMAL},
            {"name": "prompt_mask", "shape": [1, "L"], "dtype": _BOOL, "sample": _FALSE},
        ],
        "outputs": ["pred_logits", "pred_boxes", "pred_boxes_xyxy", "presence_logit"],
    },
    "segmentation_head": {
        "inputs": [
            {"name": "fpn0", "shape": [1, 256, "F4", "F4"], "dtype": _F32, "sample": _NORMAL},
            {"name": "fpn1", "shape": [1, 256, "F2", "F2"], "dtype": _F32, "sample": _NORMAL},
            {"name": "fpn2", "shape": [1, 256, "F", "F"], "dtype": _F32, "sample": _NORMAL},
            {"name": "hs", "shape": ["NL", 1, "Q", 256], "dtype": _F32, "sample": _NORMAL},
            {"name": "memory", "shape": ["HW", 1, 256], "dtype": _F32, "sample": _NORMAL},
            {"name": "prompt", "shape": ["L", 1, 256], "dtype": _F32, "sample": _NORMAL},
            {"name": "prompt_mask", "shape": [1, "L"], "dtype": _BOOL, "sample": _FALSE},
        ],
        "outputs": ["pred_masks", "semantic_seg"],
    },
    "sam_prompt_encoder": {
        "inputs": [
            {"name": "point_coords", "shape": [1, "N", 2], "dtype": _F32, "sample": {"kind": "uniform", "low": 0.0, "high": "S"}},
            {"name": "point_labels", "shape": [1, "N"], "dtype": _I32, "sample": _LABEL},
        ],
        "outputs": ["sparse", "dense"],
    },
    "sam_mask_decoder": {
        "inputs": [
            {"name": "image_embed", "shape": [1, 256, "F", "F"], "dtype": _F32, "sample": _NORMAL},
            {"name": "high_res_0", "shape": [1, 32, "F4", "F4"], "dtype": _F32, "sample": _NORMAL},
            {"name": "high_res_1", "shape": [1, 64, "F2", "F2"], "dtype": _F32, "sample": _NORMAL},
            {"name": "sparse", "shape": [1, "N1", 256], "dtype": _F32, "sample": _NORMAL},
            {"name": "dense", "shape": [1, 256, "F", "F"], "dtype": _F32, "sample": _NORMAL},
        ],
        "outputs": ["low_res_masks", "iou", "sam_tokens", "object_score_logits"],
    },
}
# N1 = N + 1 (the prompt encoder appends a pad point); its own dynamic dim for the mask decoder.
DIMS["N1"] = {"min": 2, "max": 17, "example": 4, "description": "sparse SAM tokens = N + 1"}

# Which dims each component exports as dynamic.
DYNAMIC = {
    "geometry_encoder": ("Nb", "Np"),
    "fusion_encoder": ("L",),
    "decoder": ("L",),
    "scoring_box_head": ("L",),
    "segmentation_head": ("L",),
    "sam_prompt_encoder": ("N",),
    "sam_mask_decoder": ("N1",),
}


def input_specs(model, component: str) -> List[dict]:
    """SPECS inputs with static size names resolved for this model (dynamic dim names kept)."""
    named = sizes(model)
    out = []
    for spec in SPECS[component]["inputs"]:
        spec = dict(spec, shape=[named.get(d, d) if isinstance(d, str) else d for d in spec["shape"]])
        sample = dict(spec["sample"])
        for key in ("low", "high"):
            if isinstance(sample.get(key), str):
                sample[key] = float(named[sample[key]])
        spec["sample"] = sample
        out.append(spec)
    return out


def output_names(model, component: str) -> List[str]:
    names = SPECS[component]["outputs"]
    if component == "neck" and model.inst_interactive_predictor is None:
        names = names[:6]
    return list(names)


def _sample(spec: dict, shape: List[int], gen: torch.Generator, model) -> Tensor:
    dtype = getattr(torch, spec["dtype"])
    s = spec["sample"]
    kind = s["kind"]
    if kind == "normal":
        return torch.randn(shape, generator=gen) * s.get("std", 1.0)
    if kind == "uniform":
        lo, hi = s.get("low", 0.0), s.get("high", 1.0)
        return (lo + (hi - lo) * torch.rand(shape, generator=gen)).to(dtype)
    if kind == "randint":
        return torch.randint(int(s.get("low", 0)), int(s["high"]), shape, generator=gen, dtype=dtype)
    if kind == "zeros":
        return torch.zeros(shape, dtype=dtype)
    if kind == "ones":
        return torch.ones(shape, dtype=dtype)
    if kind == "boxes_cxcywh":
        assert shape[-1] == 4
        wh = 0.05 + 0.45 * torch.rand(*shape[:-1], 2, generator=gen)
        c = wh / 2 + (1 - wh) * torch.rand(*shape[:-1], 2, generator=gen)
        return torch.cat([c, wh], -1).to(dtype)
    if kind == "tokens":
        tok = model.backbone.language_backbone.tokenizer
        return tok([s.get("text", "a cat")], context_length=shape[-1]).to(dtype)
    raise ValueError(f"unknown sample kind {kind}")


def sample_inputs(model, component: str, dims: Optional[Dict[str, int]] = None, seed: int = 0) -> tuple:
    """Random inputs for `component` following SPECS; `dims` sets dynamic sizes (default: examples).
    L and N1 follow from Nb/Np and N unless given."""
    d = {k: v["example"] for k, v in DIMS.items()}
    d.update(dims or {})
    if "L" not in (dims or {}):
        d["L"] = sizes(model)["T"] + d["Nb"] + d["Np"] + 1
    if "N1" not in (dims or {}):
        d["N1"] = d["N"] + 1
    gen = torch.Generator().manual_seed(seed)
    out = []
    for spec in input_specs(model, component):
        shape = [d[x] if isinstance(x, str) else x for x in spec["shape"]]
        out.append(_sample(spec, shape, gen, model))
    return tuple(out)


def dynamic_shapes(model, component: str) -> Optional[tuple]:
    """`dynamic_shapes` for torch.export.export(adapter, args, dynamic_shapes=...), positional."""
    names = DYNAMIC.get(component)
    if not names:
        return None
    dim = {n: torch.export.Dim(n, min=DIMS[n]["min"], max=DIMS[n]["max"]) for n in names}
    out = []
    for spec in input_specs(model, component):
        axes = {i: dim[x] for i, x in enumerate(spec["shape"]) if isinstance(x, str) and x in dim}
        out.append(axes or None)
    return tuple(out)


def make(model, component: str) -> nn.Module:
    return globals()[component](model)


# --------------------------------------------------------------------------------------------------------
# reduced variant and reference builder
# --------------------------------------------------------------------------------------------------------

# Constructor overrides (module:Class -> kwargs) for the "tiny" variant: same architecture, S = 336,
# F = 24. Applied to the names sam3.model_builder imports. SAM3InteractiveImagePredictor._bb_feat_sizes
# stays (288,144,72) (a hardcoded attribute, read only by Python-side predict_inst, not by the adapters).
TINY_OVERRIDES = {
    "sam3.model.vitdet:ViT": {"img_size": 336, "depth": 2, "global_att_blocks": [1]},
    "sam3.model.text_encoder_ve:VETextEncoder": {"layers": 2},
    "sam3.model.encoder:TransformerEncoderFusion": {"num_layers": 1},
    "sam3.model.decoder:TransformerDecoder": {"num_layers": 2, "resolution": 336},
    "sam3.model.sam3_tracking_predictor:Sam3TrackerPredictor": {"image_size": 336},
    # tracker-only parts (memory attention / memory encoder), not used by these adapters
    "sam3.sam.transformer:RoPEAttention": {"feat_sizes": [24, 24]},
    "sam3.model.memory:SimpleMaskDownSampler": {"interpol_size": [384, 384]},
}


def bpe_path() -> str:
    """open_clip's copy of the BPE vocabulary, found without importing open_clip."""
    spec = importlib.util.find_spec("open_clip")
    return os.path.join(spec.submodule_search_locations[0], "bpe_simple_vocab_16e6.txt.gz")


@contextlib.contextmanager
def _build_time_patches(overrides: Optional[dict]):
    """CPU build: the build-phase substitutions of sam3spec.substitutes.build_on_cpu (the two hardcoded
    device="cuda", position_encoding.py:47 and decoder.py:281) and constructor overrides on the classes
    sam3.model_builder imports by name. Everything is restored afterwards."""
    import importlib

    import sam3.model_builder as mb
    from sam3.model.decoder import TransformerDecoder
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3spec.substitutes import build_on_cpu

    saved_init = PositionEmbeddingSine.__dict__["__init__"]
    saved_coords = TransformerDecoder.__dict__["_get_coords"]
    saved_mb = {}

    def wrap(cls, kw):
        def make_instance(*args, **kwargs):
            return cls(*args, **{**kwargs, **kw})

        return make_instance

    try:
        PositionEmbeddingSine.__init__ = build_on_cpu.position_encoding_init
        TransformerDecoder._get_coords = build_on_cpu.decoder_get_coords
        for key, kw in (overrides or {}).items():
            module, _, name = key.partition(":")
            cls = getattr(importlib.import_module(module), name)
            hits = [n for n, v in vars(mb).items() if v is cls]
            assert hits, f"{key} is not imported by sam3.model_builder"
            kw = {k: tuple(v) if k == "global_att_blocks" else v for k, v in kw.items()}
            for n in hits:
                saved_mb[n] = cls
                setattr(mb, n, wrap(cls, kw))
        yield
    finally:
        PositionEmbeddingSine.__init__ = saved_init
        TransformerDecoder._get_coords = saved_coords
        for n, cls in saved_mb.items():
            setattr(mb, n, cls)


def init_text_encoder_params(model, seed: int = 0) -> None:
    """text_encoder_ve.py:196/:218 leave positional_embedding and text_projection as torch.empty."""
    gen = torch.Generator().manual_seed(seed)
    enc = model.backbone.language_backbone.encoder
    with torch.no_grad():
        for p in (enc.positional_embedding, enc.text_projection):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.01)


def build_model(variant: str = "tiny", seed: int = 0, enable_inst_interactivity: bool = True):
    """Random-weight Sam3Image on CPU in eval mode ("tiny": TINY_OVERRIDES, "full": 1008^2).
    The torchvision stand-in and the triton-free EDT module must be installed before this is called."""
    from sam3.model_builder import build_sam3_image_model

    overrides = {"tiny": TINY_OVERRIDES, "full": None}[variant]
    torch.manual_seed(seed)
    with _build_time_patches(overrides):
        model = build_sam3_image_model(
            bpe_path=bpe_path(),
            device="cpu",
            eval_mode=True,
            checkpoint_path=None,
            load_from_HF=False,
            enable_segmentation=True,
            enable_inst_interactivity=enable_inst_interactivity,
        )
    init_text_encoder_params(model, seed)
    return model.eval()
