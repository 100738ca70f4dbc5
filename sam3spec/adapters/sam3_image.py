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

Input names, shapes, dtypes and sampling rules, and the dynamic dims, are declared in the manifest
(manifests/sam3-image.yaml), not here.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


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

