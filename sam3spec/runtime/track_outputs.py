"""What `track` writes: per-frame masks, tracks.json (object id -> per-frame box and score), and overlay.gif, the
clip with each object's mask tinted and boxed in its own colour, for a person to watch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sam3spec.runtime.artifacts import atomic_path, write_json
from sam3spec.runtime.predict import PALETTE, annotate

FRAME_MS = 250  # overlay.gif: 4 frames a second


def tracks(results: dict, names: list[str]) -> dict:
    """{object id: {"frames": {frame index: {"file", "box", "score"}}}} from track()'s per-frame results."""
    objects: dict[str, dict] = {}
    for index in sorted(results):
        result = results[index]
        for k, obj in enumerate(result.ids):
            entry = objects.setdefault(str(obj), {"frames": {}})
            entry["frames"][str(index)] = {"file": names[index], "box": [round(float(v), 2) for v in result.boxes[k]],
                                           "score": round(float(result.scores[k]), 6)}
    return dict(sorted(objects.items(), key=lambda item: int(item[0])))


def _label_image(result, size: tuple[int, int]):
    """One frame's masks as a 16-bit PNG: object id + 1 where the object is, 0 elsewhere."""
    from PIL import Image

    labels = np.zeros((size[1], size[0]), dtype=np.uint16)
    for k, obj in enumerate(result.ids):
        labels[result.masks[k]] = obj + 1
    return Image.fromarray(labels)


def _color(obj: int) -> tuple[int, int, int]:
    return PALETTE[obj % len(PALETTE)]


def overlay_frame(frame, result, caption: str):
    """One frame with its objects tinted and boxed (colour by id), the id and score by each box, and a caption."""
    return annotate(frame, result.masks, result.boxes, [_color(obj) for obj in result.ids],
                    [f"id {obj}  {result.scores[k]:.3f}" for k, obj in enumerate(result.ids)], caption, 16)


def write_gif(images: list, path: Path) -> None:
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=FRAME_MS, loop=0)


def write(out: Path, clip, results: dict, info: dict, title: str = "TVM") -> dict:
    """masks/<frame>.png, tracks.json and overlay.gif under `out`; returns the tracks."""
    masks = out / "masks"
    masks.mkdir(parents=True, exist_ok=True)
    for index in sorted(results):
        with atomic_path(masks / f"{index:05d}.png") as tmp:
            _label_image(results[index], clip.size).save(tmp, format="PNG")
    objects = tracks(results, clip.names)
    write_json(out / "tracks.json", {**info, "frames": len(clip.frames), "tracked_frames": sorted(results),
                                     "size": list(clip.size), "objects": objects,
                                     "masks": "masks/<frame>.png: 16-bit, object id + 1 where the object is"})
    write_gif([overlay_frame(clip.frames[i], results[i], f"{title}  frame {i}  {len(results[i].ids)} object(s)")
               for i in sorted(results)], out / "overlay.gif")
    return objects
