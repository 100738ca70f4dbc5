"""Video clips for `track`: a folder of frames or a video file, checked before SAM3 sees them, and the pan and zoom
clip `e2e-video` makes from a photograph.

A folder is read as SAM3's loader reads it (io_utils.load_video_frames_from_image_folder: its image extensions,
frames ordered by the number in their names, else by name) and given to SAM3 as the folder. A video file is
decoded here (OpenCV where it is installed, as SAM3's own loader does; animated GIF, WebP or PNG through PIL) and
given to SAM3 as its list of frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tiff", ".webp")  # sam3.model.io_utils.IMAGE_EXTS
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm")             # sam3.model.io_utils.VIDEO_EXTS


class ClipError(ValueError):
    """A clip that cannot be tracked: one line for the user."""


@dataclass
class Clip:
    frames: list        # RGB PIL images, in order
    source: object      # what SAM3's init_state takes: the folder's path, or the frames
    names: list[str]    # each frame's file name (a folder), or its index (a video)

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[0].size


def _frame_order(names: list[str]) -> list[str]:
    try:
        return sorted(names, key=lambda n: int(os.path.splitext(n)[0]))
    except ValueError:
        return sorted(names)


def _same_size(frames: list, names: list[str], what: str) -> None:
    for frame, name in zip(frames, names):
        if frame.size != frames[0].size:
            raise ClipError(f"{what}: frames differ in size ({names[0]} is {frames[0].size[0]}x{frames[0].size[1]}, "
                            f"{name} is {frame.size[0]}x{frame.size[1]}); resize them to one size")


def _folder(path: Path) -> Clip:
    from PIL import Image, UnidentifiedImageError

    names = _frame_order([p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file()])
    if not names:
        raise ClipError(f"frame folder {path}: no frames in it ({', '.join(IMAGE_EXTS)})")
    frames = []
    for name in names:
        try:
            with Image.open(path / name) as im:
                frames.append(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise ClipError(f"frame {path / name}: not a readable image ({exc})") from None
    _same_size(frames, names, f"frame folder {path}")
    return Clip(frames, str(path), names)


def _video_cv2(path: Path) -> list:
    import cv2
    from PIL import Image

    capture = cv2.VideoCapture(str(path))
    frames = []
    while capture.isOpened():
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
    capture.release()
    return frames


def _video_pil(path: Path) -> list:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return [frame.convert("RGB") for frame in ImageSequence.Iterator(im)]


def _video(path: Path) -> Clip:
    import importlib.util

    from PIL import UnidentifiedImageError

    if path.suffix.lower() in VIDEO_EXTS:
        if importlib.util.find_spec("cv2") is None:
            raise ClipError(f"video {path}: reading {path.suffix} needs OpenCV (pip install opencv-python-headless), "
                            "as SAM3's own loader does; or give a folder of frames or an animated GIF")
        frames = _video_cv2(path)
    else:
        try:
            frames = _video_pil(path)
        except (UnidentifiedImageError, OSError) as exc:
            raise ClipError(f"video {path}: not a readable video or animated image ({exc})") from None
    if not frames:
        raise ClipError(f"video {path}: no frames could be read from it")
    if len(frames) == 1:
        raise ClipError(f"video {path}: a single image, not a clip (a folder of frames or a video file)")
    names = [str(i) for i in range(len(frames))]
    _same_size(frames, names, f"video {path}")
    return Clip(frames, frames, names)


def open_clip(path: str) -> Clip:
    """The clip at `path` (a frame folder or a video file), or ClipError saying why it cannot be tracked."""
    p = Path(path)
    if p.is_dir():
        return _folder(p)
    if p.is_file():
        return _video(p)
    raise ClipError(f"{path}: no such frame folder or video file")


def pan_and_zoom(image, frames: int, size: tuple[int, int]) -> list:
    """`frames` views of `image` at `size` (w, h): a window that shrinks to 75% while it slides left to right."""
    from PIL import Image

    width, height = image.size
    views = []
    for i in range(frames):
        t = i / (frames - 1)
        scale = 0.85 * (1.0 - 0.25 * t)
        w, h = width * scale, height * scale
        x0, y0 = (width - w) * (0.2 + 0.6 * t), (height - h) * 0.5
        views.append(image.crop((x0, y0, x0 + w, y0 + h)).resize(size, Image.BICUBIC))
    return views


def write_frames(frames: list, folder: Path) -> None:
    """Frames as 00000.jpg, 00001.jpg, ... (SAM3's numbered frame names), replacing what the folder held."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jpg"):
        old.unlink()
    for i, frame in enumerate(frames):
        frame.save(folder / f"{i:05d}.jpg", quality=95)
