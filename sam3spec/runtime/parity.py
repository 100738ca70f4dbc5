"""Parity of two runs of one prompt (PyTorch and TVM): detections matched one to one by the Hungarian
algorithm on mask IoU, then per matched pair the mask IoU, the box L-infinity distance in pixels and the score
difference, and the detection counts at the default threshold, each checked against the contract."""

from __future__ import annotations

import numpy as np

# contract key -> (metric it bounds, "min" or "max"): mask IoU is a floor, the two distances are ceilings
CONTRACT = {"mask_iou": ("min_mask_iou", "min"), "box_px": ("max_box_linf_px", "max"),
            "score": ("max_score_diff", "max")}


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, H, W] and [M, H, W] bool -> [N, M] IoU; two empty masks agree (IoU 1)."""
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def compare(reference, candidate, threshold: float, contract: dict) -> dict:
    """`reference` and `candidate` are Detections of all queries (threshold 0). Returns the metrics, the
    failures (contract key -> message) and `ok`."""
    from scipy.optimize import linear_sum_assignment

    iou = mask_iou(reference.masks, candidate.masks)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    pair_iou = iou[rows, cols]
    box_linf = np.abs(reference.boxes[rows] - candidate.boxes[cols]).max(1) if len(rows) else np.zeros(0)
    score_diff = np.abs(reference.scores[rows] - candidate.scores[cols])
    counts = {"pytorch": _count(reference, threshold), "tvm": _count(candidate, threshold)}
    metrics = {
        "detections": {"pytorch": len(reference.scores), "tvm": len(candidate.scores)},
        "matched": len(rows),
        "matched_same_index": int((rows == cols).sum()),
        "min_mask_iou": float(pair_iou.min()) if len(rows) else 1.0,
        "mean_mask_iou": float(pair_iou.mean()) if len(rows) else 1.0,
        "max_box_linf_px": float(box_linf.max()) if len(rows) else 0.0,
        "max_score_diff": float(score_diff.max()) if len(rows) else 0.0,
        "count_at_threshold": counts,
        "threshold": threshold,
        "max_score": {"pytorch": float(reference.scores.max(initial=0)), "tvm": float(candidate.scores.max(initial=0))},
        "worst_pair": _worst(rows, cols, pair_iou),
    }
    failures = {}
    for key, (metric, kind) in CONTRACT.items():
        value, bound = metrics[metric], contract[key]
        if (value < bound) if kind == "min" else (value > bound):
            failures[key] = f"{metric} {value:.4g} {'<' if kind == 'min' else '>'} {bound}"
    if metrics["detections"]["pytorch"] != metrics["detections"]["tvm"]:
        failures["detections"] = f"{metrics['detections']['pytorch']} PyTorch detections, {metrics['detections']['tvm']} TVM"
    if counts["pytorch"] != counts["tvm"]:
        failures["count"] = f"{counts['pytorch']} PyTorch detections above {threshold}, {counts['tvm']} TVM"
    return {"metrics": metrics, "contract": dict(contract), "failures": failures, "ok": not failures}


def _count(det, threshold: float) -> int:
    """Detections the app returns at its default threshold: grounding filters by score, the interactive path
    returns every mask."""
    return int((det.scores > threshold).sum()) if det.path == "grounding" else len(det.scores)


def _worst(rows, cols, pair_iou) -> dict | None:
    if not len(rows):
        return None
    i = int(np.argmin(pair_iou))
    return {"pytorch": int(rows[i]), "tvm": int(cols[i]), "mask_iou": float(pair_iou[i])}
