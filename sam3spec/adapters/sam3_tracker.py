"""Adapters that cut SAM3's tracker (`sam3.model.sam3_tracker_base.Sam3TrackerBase`, reached as
`inst_interactive_predictor.model`: in the image model, and in the video model through
:func:`sam3spec.adapters.sam3_video.image_view`) into exportable components, as :mod:`.sam3_image` does for the
detector: the same submodules mounted at the same paths, SAM3's own code called.

Each component is one of the tracker's modules, called as SAM3 calls it, so that a compiled stand-in can take its
place in SAM3's own video inference (F the feature side, S the image side):

    memory_attention(src [HW,1,256], src_pos [HW,1,256], memory [M,HW,1,64], memory_pos [M,HW,1,64],
                     pointers [P,1,64], pointers_pos [P,1,64]) -> memory [HW,1,256]
        `transformer.encoder` as Sam3TrackerBase._prepare_memory_conditioned_features calls it: the current
        frame's features attend to M memory frames (each [HW,1,64], its temporal position encoding already in
        its position) and P object-pointer tokens (4 per pointer, mem_dim 64 < 256), which skip RoPE. One object
        per call: SAM3 batches the objects it tracks, and each one's result depends on its own memory only.
    memory_encoder(pix_feat [B,256,F,F], mask_for_mem [B,1,S,S]) -> maskmem_features, maskmem_pos_enc [B,64,F,F]
        `maskmem_backbone(pix_feat, mask_for_mem, skip_mask_sigmoid=True)`, as _encode_new_memory calls it; the
        mask's activation before it and the no-object embedding after it are SAM3's elementwise code around it.
    tracker_mask_decoder(image_embeddings [1,256,F,F], image_pe [1,256,F,F], sparse [1,N,256], dense [1,256,F,F],
                     high_res_0 [1,32,4F,4F], high_res_1 [1,64,2F,2F]) -> masks [1,4,4F,4F], iou_pred [1,4],
                     mask_tokens_out [1,4,256], object_score_logits [1,1]
        `sam_mask_decoder.predict_masks` as MaskDecoder.forward calls it from _forward_sam_heads: every mask
        token; forward's choice among them (multimask, or the most stable mask) stays SAM3's code. Unlike the
        image manifest's sam_mask_decoder, the image embedding comes in as the tracker makes it (memory-
        conditioned, or with no_mem_embed on a first frame); one object per call, as memory_attention (the
        decoder treats each object on its own).
    object_pointer(tokens [B,256]) -> obj_ptr [B,256]
        `obj_ptr_proj` (a 3-layer MLP) on the chosen SAM output token, as _forward_sam_heads calls it; the
        occlusion mix with no_obj_ptr after it is SAM3's elementwise code.
    pointer_position(sine [P,256]) -> pos [P,64]
        `obj_ptr_tpos_proj` on the pointers' temporal sine encodings, as _get_tpos_enc calls it.
    mask_downsample(mask [B,1,16F,16F]) -> [B,1,4F,4F]
        the tracker's `mask_downsample` convolution, which _use_mask_as_output applies to a detector's mask
        before prompting SAM's heads with it.
    mask_prompt_encoder(mask [B,1,4F,4F]) -> dense [B,256,F,F]
        the prompt encoder's dense embedding of a mask prompt (`sam_prompt_encoder._embed_masks`); the sparse
        embedding of the points that come with it is the image manifest's sam_prompt_encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from sam3spec.adapters.sam3_image import _Adapter, _get

TRACKER = "inst_interactive_predictor.model"


def _tracker_feat(model: nn.Module) -> int:
    """Side of the tracker's feature map: its memory attention's RoPE table is built for it."""
    attn = _get(model, TRACKER).transformer.encoder.layers[0].self_attn
    return int(round(attn.freqs_cis.shape[0] ** 0.5))


class _MemoryAttention(_Adapter):
    def __init__(self, model):
        super().__init__(model, [f"{TRACKER}.transformer.encoder"])
        self.feat = _tracker_feat(model)

    def forward(self, src, src_pos, memory, memory_pos, pointers, pointers_pos):
        t = self.inst_interactive_predictor.model
        out = t.transformer.encoder(
            src=[src], src_key_padding_mask=[None], src_pos=[src_pos],
            prompt=torch.cat([memory.flatten(0, 1), pointers], dim=0),
            prompt_pos=torch.cat([memory_pos.flatten(0, 1), pointers_pos], dim=0),
            prompt_key_padding_mask=None, feat_sizes=[(self.feat, self.feat)], num_obj_ptr_tokens=pointers.shape[0],
        )
        return out["memory"]


def memory_attention(model) -> nn.Module:
    """src, src_pos [HW,1,256]; memory, memory_pos [M,HW,1,64]; pointers, pointers_pos [P,1,64] -> memory [HW,1,256]."""
    return _MemoryAttention(model)


class _MemoryEncoder(_Adapter):
    def __init__(self, model):
        super().__init__(model, [f"{TRACKER}.maskmem_backbone"])

    def forward(self, pix_feat, mask_for_mem):
        out = self.inst_interactive_predictor.model.maskmem_backbone(pix_feat, mask_for_mem, skip_mask_sigmoid=True)
        return out["vision_features"], out["vision_pos_enc"][-1]


def memory_encoder(model) -> nn.Module:
    """pix_feat [B,256,F,F], mask_for_mem [B,1,S,S] (activated, scaled and biased) -> maskmem_features,
    maskmem_pos_enc [B,64,F,F]."""
    return _MemoryEncoder(model)


class _MaskDecoder(_Adapter):
    def __init__(self, model):
        super().__init__(model, [f"{TRACKER}.sam_mask_decoder"])

    def forward(self, image_embeddings, image_pe, sparse, dense, high_res_0, high_res_1):
        return self.inst_interactive_predictor.model.sam_mask_decoder.predict_masks(
            image_embeddings=image_embeddings, image_pe=image_pe, sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, repeat_image=False, high_res_features=[high_res_0, high_res_1])


def tracker_mask_decoder(model) -> nn.Module:
    """image_embeddings [1,256,F,F], image_pe [1,256,F,F], sparse [1,N,256], dense [1,256,F,F], high_res_0
    [1,32,4F,4F], high_res_1 [1,64,2F,2F] -> masks [1,4,4F,4F], iou_pred [1,4], mask_tokens_out [1,4,256],
    object_score_logits [1,1]."""
    return _MaskDecoder(model)


class _ObjectPointer(_Adapter):
    def __init__(self, model):
        super().__init__(model, [f"{TRACKER}.obj_ptr_proj"])

    def forward(self, tokens):
        return self.inst_interactive_predictor.model.obj_ptr_proj(tokens)


def object_pointer(model) -> nn.Module:
    """tokens [B,256] (the SAM output token of each object's chosen mask) -> obj_ptr [B,256]."""
    return _ObjectPointer(model)


class _PointerPosition(_Adapter):
    def __init__(self, model):
        super().__init__(model, [f"{TRACKER}.obj_ptr_tpos_proj"])

    def forward(self, sine):
        return self.inst_interactive_predictor.model.obj_ptr_tpos_proj(sine)


def pointer_position(model) -> nn.Module:
    """sine [P,256] (get_1d_sine_pe of each pointer's normalised frame distance) -> pos [P,64]."""
    return _PointerPosition(model)


class _MaskDownsample(_Adapter):
    def __init__(self, model):
        super().__init__(model, [f"{TRACKER}.mask_downsample"])

    def forward(self, mask):
        return self.inst_interactive_predictor.model.mask_downsample(mask)


def mask_downsample(model) -> nn.Module:
    """mask [B,1,16F,16F] float (a detector's mask, 0 or 1, at the tracker's input_mask_size) -> [B,1,4F,4F]."""
    return _MaskDownsample(model)


class _MaskPromptEncoder(_Adapter):
    def __init__(self, model):
        super().__init__(model, [f"{TRACKER}.sam_prompt_encoder.mask_downscaling"])

    def forward(self, mask):
        return self.inst_interactive_predictor.model.sam_prompt_encoder.mask_downscaling(mask)


def mask_prompt_encoder(model) -> nn.Module:
    """mask [B,1,4F,4F] (a mask prompt at the decoder's low resolution) -> dense [B,256,F,F]."""
    return _MaskPromptEncoder(model)
