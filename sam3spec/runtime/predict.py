"""End to end on the compiled components: check the image and prompt, load the components as the app's `run`,
and write what a prompt gives (mask PNGs, detections.json, overlay.png) and, against PyTorch, a side by side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sam3spec.runtime.artifacts import atomic_path, progress, write_json

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]
TOP_WHEN_NONE = 3  # detections drawn when none scores above the threshold


def open_image(path: str):
    """(RGB PIL image, None) or (None, why it cannot be used)."""
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        return None, f"image {path}: no such file"
    try:
        with Image.open(path) as im:
            return im.convert("RGB"), None
    except (UnidentifiedImageError, OSError) as exc:
        return None, f"image {path}: not a readable image ({exc})"


def prompt_problem(prompt: dict, width: int, height: int) -> str | None:
    """Why `prompt` does not fit a width x height image (boxes x0 < x1, y0 < y1 inside it; points inside), or None."""
    for x0, y0, x1, y1 in prompt.get("boxes") or []:
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            return (f"box {x0:g},{y0:g},{x1:g},{y1:g} is not inside the {width}x{height} image "
                    f"(need 0 <= x0 < x1 <= {width}, 0 <= y0 < y1 <= {height})")
    for x, y, label in prompt.get("points") or []:
        if not (0 <= x <= width and 0 <= y <= height):
            return f"point {x:g},{y:g} is outside the {width}x{height} image"
        if label not in (0, 1):
            return f"point {x:g},{y:g}: label must be 1 (foreground) or 0 (background), got {label:g}"
    return None


def weights_problem(build_dir: Path, names: list[str], wanted: dict) -> str | None:
    """Why the compiled artifacts do not hold the weights `wanted` (checkpoint.weights_source), or None."""
    for name in names:
        record = build_dir / name / "export.json"
        held = json.loads(record.read_text()).get("weights") if record.is_file() else None
        if held is None:
            return f"{name}: its export.json does not say which weights it holds (built before weights were recorded)"
        if held != wanted:
            use = f" (to use them: --checkpoint {held['checkpoint']})" if held.get("checkpoint") else ""
            return f"{name} holds {describe(held)}, not {describe(wanted)}{use}"
    return None


def describe(weights: dict) -> str:
    return f"checkpoint {weights['checkpoint']}" if weights.get("checkpoint") else f"random weights (seed {weights['seed']})"


def tvm_run(build_dir: Path, target: dict, names: list[str]):
    """run(name, *torch tensors) -> tuple of torch tensors, each component a compiled library."""
    import torch

    from sam3spec.runtime.loader import Component

    loaded = {}
    for i, name in enumerate(names, 1):
        progress(f"loading {name} ({i}/{len(names)})")
        loaded[name] = Component(build_dir / name, target)

    def run(name, *tensors):
        arrays = [np.ascontiguousarray(t.detach().cpu().numpy()) for t in tensors]
        return tuple(torch.from_numpy(out) for out in loaded[name](*arrays))

    return run


# ---------------------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------------------


def shown(det, threshold: float) -> tuple[list[int], str]:
    """The detections worth drawing, and a caption: grounding those above the threshold (else the top few),
    interactive the mask with the best predicted IoU."""
    order = [int(i) for i in np.argsort(-det.scores, kind="stable")]
    if det.path == "interactive":
        return order[:1], f"best of {len(order)} masks (predicted IoU {det.scores[order[0]]:.3f})"
    above = [i for i in order if det.scores[i] > threshold]
    if above:
        return above, f"{len(above)} detection(s) above {threshold:g}"
    if not order:
        return [], f"no detection above {threshold:g}"
    return order[:TOP_WHEN_NONE], f"none above {threshold:g}: top {min(TOP_WHEN_NONE, len(order))} shown"


def annotate(image, masks, boxes, colors, labels, caption: str, band: int):
    """The image with each mask tinted in its colour, its box drawn and labelled, under a caption band `band` px
    high (predict's overlay.png and track's overlay.gif)."""
    from PIL import Image, ImageDraw

    pixels = np.asarray(image, dtype=np.float32).copy()
    for mask, color in zip(masks, colors):
        pixels[mask] = 0.5 * pixels[mask] + 0.5 * np.array(color, dtype=np.float32)
    out = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for box, color, label in zip(boxes, colors, labels):
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=color, width=2)
        draw.text((x0 + 3, y0 + 2), label, fill=(255, 255, 255))
    header = Image.new("RGB", (out.width, band), (0, 0, 0))
    ImageDraw.Draw(header).text((4, 2), caption, fill=(255, 255, 255))
    framed = Image.new("RGB", (out.width, out.height + header.height))
    framed.paste(header, (0, 0))
    framed.paste(out, (0, header.height))
    return framed


def overlay(image, det, threshold: float, title: str):
    """The image with the shown masks tinted, their boxes drawn and scored, and a caption."""
    picked, caption = shown(det, threshold)
    return annotate(image, [det.masks[i] for i in picked], [det.boxes[i] for i in picked],
                    [PALETTE[k % len(PALETTE)] for k in range(len(picked))],
                    [f"{det.scores[i]:.3f}" for i in picked], f"{title}\n{caption}", 30)


def side_by_side(left, right):
    from PIL import Image

    both = Image.new("RGB", (left.width + right.width + 8, max(left.height, right.height)), (255, 255, 255))
    both.paste(left, (0, 0))
    both.paste(right, (left.width + 8, 0))
    return both


def save_png(image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def write(out_dir: Path, image, det, threshold: float, info: dict) -> dict:
    """masks/NNN.png (the shown detections), detections.json and overlay.png under out_dir."""
    from PIL import Image

    picked, caption = shown(det, threshold)
    rows = []
    for i in picked:
        mask_file = f"masks/{i:03d}.png"
        save_png(Image.fromarray(det.masks[i].astype(np.uint8) * 255), out_dir / mask_file)
        rows.append({"index": i, "score": float(det.scores[i]), "box_xyxy": [round(float(v), 2) for v in det.boxes[i]],
                     "mask": mask_file})
    save_png(overlay(image, det, threshold, f"TVM ({info['target']})"), out_dir / "overlay.png")
    summary = {**info, "path": det.path, "threshold": threshold, "image_size": list(image.size),
               "above_threshold": int((det.scores > threshold).sum()) if det.path == "grounding" else None,
               "shown": caption, "detections": rows}
    write_json(out_dir / "detections.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------------------


def compiled_model(app, *, model_cfg: dict, sizes: dict, build_dir: Path, target: dict, names: list[str]):
    """The app's compiled model on the libraries under build_dir (import- and build-phase substitutions on)."""
    from sam3spec.runtime import model as model_lib, substitute

    subs = model_cfg.get("substitutions", [])
    substitute.apply(subs, "import")
    substitute.apply(subs, "build")
    return app.compiled(tvm_run(build_dir, target, names), sizes, model_lib.package_file(model_cfg["vocabulary"]))


def timed(fn, *args):
    import time

    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def parity_rows(app, compiled, original, image, prompts: list[dict], threshold: float, contract: dict,
                out_dir: Path, info: dict) -> list[dict]:
    """Each prompt through both models (every query: threshold 0), compared; per prompt under out_dir/<name>/
    the TVM outputs (write) and side_by_side.png (PyTorch | TVM)."""
    from sam3spec.runtime import parity

    rows = []
    for prompt in prompts:
        progress(f"prompt {prompt['name']}: TVM")
        tvm_det, tvm_s = timed(app.predict, compiled, image, prompt, 0.0)
        progress(f"prompt {prompt['name']}: PyTorch")
        torch_det, torch_s = timed(app.predict, original, image, prompt, 0.0)
        result = parity.compare(torch_det, tvm_det, threshold, contract)
        sub = out_dir / prompt["name"]
        write(sub, image, tvm_det, threshold, {**info, "prompt": prompt})
        save_png(side_by_side(overlay(image, torch_det, threshold, "PyTorch"),
                              overlay(image, tvm_det, threshold, f"TVM ({info['target']})")), sub / "side_by_side.png")
        rows.append({"name": prompt["name"], "prompt": prompt, "path": tvm_det.path, **result,
                     "seconds": {"tvm": round(tvm_s, 2), "pytorch": round(torch_s, 2)},
                     "side_by_side": f"{prompt['name']}/side_by_side.png"})
        progress(f"prompt {prompt['name']}: {'meets the contract' if result['ok'] else 'FAILS: ' + '; '.join(result['failures'].values())}")
    return rows


def parity_too_large(image, queries: int = 200, budget_bytes: float = 4e9) -> str | None:
    """The comparison upsamples every query's mask to the image size in float32 (Sam3Processor does, at
    threshold 0): refuse images for which that alone passes the budget."""
    need = image.size[0] * image.size[1] * queries * 4
    if need > budget_bytes:
        side = int((budget_bytes / (queries * 4)) ** 0.5)
        return (f"image {image.size[0]}x{image.size[1]} is too large to compare all {queries} queries "
                f"({need / 1e9:.1f} GB of mask logits); resize it to about {side}x{side} pixels or fewer")
    return None
