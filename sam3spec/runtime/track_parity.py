"""`track --compare`: the same prompt through SAM3's PyTorch video inference and the compiled one, frame by frame.

Objects are matched by SAM3's object id, one to one across the clip: a frame passes when both runs have the same
ids alive on it and every object's mask IoU, box L-inf (pixels) and score difference are within the manifest's
`track.contract`. The report names the worst frame and plots IoU against frame index (iou.svg), since tracking
compounds errors over frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sam3spec.runtime.artifacts import atomic_path, write_json


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare(reference: dict, tvm: dict, contract: dict) -> dict:
    """Per-frame rows and the verdict for two runs of track() (PyTorch first, TVM second)."""
    frames, objects = [], {}
    for index in sorted(set(reference) | set(tvm)):
        ref, got = reference.get(index), tvm.get(index)
        ref_ids, got_ids = (ref.ids if ref else []), (got.ids if got else [])
        row = {"frame": index, "ids_pytorch": ref_ids, "ids_tvm": got_ids, "same_ids": ref_ids == got_ids,
               "objects": []}
        for obj in sorted(set(ref_ids) & set(got_ids)):
            i, j = ref_ids.index(obj), got_ids.index(obj)
            entry = {"id": obj, "mask_iou": _iou(ref.masks[i], got.masks[j]),
                     "box_linf_px": float(np.abs(ref.boxes[i].astype(np.float64) - got.boxes[j]).max()),
                     "score_diff": float(abs(float(ref.scores[i]) - float(got.scores[j])))}
            row["objects"].append(entry)
            objects.setdefault(str(obj), []).append((index, entry["mask_iou"]))
        ious = [o["mask_iou"] for o in row["objects"]]
        row["min_mask_iou"] = min(ious) if ious else None
        row["max_box_linf_px"] = max((o["box_linf_px"] for o in row["objects"]), default=0.0)
        row["max_score_diff"] = max((o["score_diff"] for o in row["objects"]), default=0.0)
        problems = []
        if not row["same_ids"]:
            problems.append(f"ids {ref_ids} (PyTorch) vs {got_ids} (TVM)")
        if ious and min(ious) < contract["mask_iou"]:
            problems.append(f"mask IoU {min(ious):.4f} < {contract['mask_iou']}")
        if row["max_box_linf_px"] > contract["box_px"]:
            problems.append(f"box {row['max_box_linf_px']:.3g} px > {contract['box_px']}")
        if row["max_score_diff"] > contract["score"]:
            problems.append(f"score diff {row['max_score_diff']:.2e} > {contract['score']}")
        row["ok"], row["problems"] = not problems, problems
        frames.append(row)
    scored = [r for r in frames if r["min_mask_iou"] is not None]
    worst = min(scored, key=lambda r: (r["ok"], r["min_mask_iou"]), default=None)
    tracks_pt = sorted({o for r in frames for o in r["ids_pytorch"]})
    tracks_tvm = sorted({o for r in frames for o in r["ids_tvm"]})
    return {"contract": contract, "frames": frames, "ok": all(r["ok"] for r in frames) and tracks_pt == tracks_tvm,
            "tracks": {"pytorch": tracks_pt, "tvm": tracks_tvm}, "worst_frame": worst["frame"] if worst else None,
            "iou_by_object": objects}


def markdown(parity: dict) -> str:
    c = parity["contract"]
    lines = [f"# {parity['manifest']} on {parity['target']}: tracking, TVM vs PyTorch", "",
             f"Clip {parity['video']} ({parity['frame_count']} frames, {parity['size'][0]}x{parity['size'][1]}), prompt "
             f"{parity['prompt_text']} on frame {parity['frame']}, weights: {parity['weights']}. Objects are matched by "
             f"SAM3's id. Contract per frame and object: mask IoU >= {c['mask_iou']}, box L-inf <= {c['box_px']} px, "
             f"|score difference| <= {c['score']}, the same ids alive.", "",
             f"Tracks: PyTorch {parity['tracks']['pytorch']}, TVM {parity['tracks']['tvm']}. "
             f"Worst frame: {parity['worst_frame']}. IoU against frame index: `iou.svg`.", "",
             "| frame | ids (PyTorch) | ids (TVM) | min mask IoU | max box L-inf px | max score diff | result |",
             "|---|---|---|---|---|---|---|"]
    for r in parity["frames"]:
        iou = "-" if r["min_mask_iou"] is None else f"{r['min_mask_iou']:.4f}"
        result = "pass" if r["ok"] else "FAIL: " + "; ".join(r["problems"])
        lines.append(f"| {r['frame']} | {r['ids_pytorch']} | {r['ids_tvm']} | {iou} | {r['max_box_linf_px']:.3g} "
                     f"| {r['max_score_diff']:.2e} | {result} |")
    passed = sum(r["ok"] for r in parity["frames"])
    lines += ["", f"{passed} of {len(parity['frames'])} frames meet the contract"
              + ("; the track sets match." if parity["tracks"]["pytorch"] == parity["tracks"]["tvm"] else
                 "; the track sets DIFFER.") + f" TVM {parity['seconds']['tvm']:.1f} s, PyTorch "
              f"{parity['seconds']['pytorch']:.1f} s for the whole clip, one run each (not a benchmark).", ""]
    return "\n".join(lines)


def svg(parity: dict, width: int = 640, height: int = 300) -> str:
    """IoU against frame index, one line per object, the contract's IoU as a dashed line."""
    from sam3spec.runtime.predict import PALETTE

    frames = [r["frame"] for r in parity["frames"]] or [0]
    x_lo, x_hi = min(frames), max(max(frames), min(frames) + 1)
    floor = parity["contract"]["mask_iou"]
    lows = [iou for series in parity["iou_by_object"].values() for _, iou in series]
    y_lo = min([floor - 0.01] + lows)
    left, right, top, bottom = 60, 20, 30, 40

    def x(f):
        return left + (f - x_lo) / (x_hi - x_lo) * (width - left - right)

    def y(v):
        return top + (1.0 - v) / (1.0 - y_lo) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{left}" y="18">mask IoU (TVM vs PyTorch) against frame index; dashed: the contract '
             f'({floor})</text>',
             f'<line x1="{left}" y1="{y(floor):.1f}" x2="{width - right}" y2="{y(floor):.1f}" stroke="grey" '
             f'stroke-dasharray="4,3"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="black"/>']
    for v in (1.0, floor, y_lo):
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3f}</text>')
    for f in frames:
        parts.append(f'<text x="{x(f):.1f}" y="{height - bottom + 14}" text-anchor="middle">{f}</text>')
    for n, (obj, series) in enumerate(sorted(parity["iou_by_object"].items(), key=lambda kv: int(kv[0]))):
        r, g, b = PALETTE[int(obj) % len(PALETTE)]
        points = " ".join(f"{x(f):.1f},{y(v):.1f}" for f, v in series)
        parts.append(f'<polyline points="{points}" fill="none" stroke="rgb({r},{g},{b})" stroke-width="2"/>')
        parts.append(f'<text x="{width - right - 60}" y="{top + 14 * (n + 1)}" fill="rgb({r},{g},{b})">id {obj}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write(out: Path, parity: dict) -> None:
    write_json(out / "parity.json", parity)
    with atomic_path(out / "parity.md") as tmp:
        tmp.write_text(markdown(parity))
    with atomic_path(out / "iou.svg") as tmp:
        tmp.write_text(svg(parity))
