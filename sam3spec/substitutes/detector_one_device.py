"""The video detector's frame step for one device: no NCCL gather, and the tracker's features kept in float32.

Sam3ImageOnVideoMultiGPU._build_multigpu_buffer_next_chunk (sam3_image.py:792) runs the detector on this rank's
frame, then casts the tracker's backbone features to bfloat16 and all-gathers everything over NCCL. With one
process (world_size 1) its gather is the identity, and the bfloat16 cast only halves NCCL traffic; without CUDA
autocast it also breaks the float32 convolutions that read those features (sam3_video_base.py:383). This is the
same step for world_size 1: the detector, its NMS, and the buffer entry, with the features as computed.

replace: sam3.model.sam3_image:Sam3ImageOnVideoMultiGPU._build_multigpu_buffer_next_chunk
with:    sam3spec.substitutes.detector_one_device:build_buffer
"""

from __future__ import annotations

from sam3.model.sam3_image import nms_masks

DETECTIONS = ("pred_logits", "pred_boxes", "pred_boxes_xyxy", "pred_masks")


def build_buffer(self, backbone_out, find_inputs, geometric_prompt, frame_idx_begin, frame_idx_end, num_frames,
                 multigpu_buffer, run_nms=False, nms_prob_thresh=None, nms_iou_thresh=None):
    if self.world_size != 1:
        raise RuntimeError(f"sam3spec's detector step runs on one device, not {self.world_size}")
    out = self.forward_grounding(backbone_out=backbone_out, find_input=find_inputs[frame_idx_begin],
                                 find_target=None, geometric_prompt=geometric_prompt)
    if run_nms:
        assert nms_prob_thresh is not None and nms_iou_thresh is not None
        pred_probs = out["pred_logits"].squeeze(-1).sigmoid()
        for prompt_idx in range(pred_probs.size(0)):
            keep = nms_masks(pred_probs=pred_probs[prompt_idx], pred_masks=out["pred_masks"][prompt_idx],
                             prob_threshold=nms_prob_thresh, iou_threshold=nms_iou_thresh)
            out["pred_logits"][prompt_idx, :, 0] -= 1e4 * (~keep).float()
    feats = out["prev_encoder_out"]["backbone_out"]["sam2_backbone_out"]
    entry = {key: (out[key], None) for key in DETECTIONS}
    for level in range(3):
        entry[f"tracker_backbone_fpn_{level}"] = (feats["backbone_fpn"][level], None)
    entry["tracker_backbone_pos_enc"] = (feats["vision_pos_enc"], None)
    multigpu_buffer[frame_idx_begin] = entry
