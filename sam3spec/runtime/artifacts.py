"""Files under build/: written atomically (temp file, then rename) so nothing is left half-written, and
recorded by content (sha256) in the step result that wrote them, so a later reader knows it has that file."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path):
    """Yields a temporary path next to `path`; renamed onto `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


TEMP_PREFIX = "."  # atomic_path's temporary files: `.NAME.XXXX.SUFFIX` beside NAME


def remove_temporaries(directory: Path) -> None:
    """Temporary files a killed process left (never taken for a result: only a rename makes one)."""
    for path in directory.glob(f"{TEMP_PREFIX}*") if directory.is_dir() else []:
        if path.is_file():
            path.unlink()


class ArtifactError(Exception):
    """A file is not the one its step recorded (corrupted, swapped, or missing)."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def describe_file(path: Path) -> dict:
    """What a step records of a file it wrote: sha256, size, and mtime_ns (to skip re-hashing an untouched file)."""
    stat = path.stat()
    return {"sha256": sha256_file(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def record_files(result: dict, directory: Path, names: list[str]) -> None:
    """Add `names` (files in `directory` the step wrote) to the step result's `artifacts`."""
    result.setdefault("artifacts", {}).update({name: describe_file(directory / name) for name in names})


def file_problem(path: Path, recorded: dict, quick: bool = False) -> str | None:
    """Why `path` is not the file `recorded` describes, or None. quick: trust an unchanged size and mtime
    (what a cache check does); otherwise the content is hashed (what a step that loads the file does)."""
    if not path.is_file():
        return f"{path.name} is missing"
    stat = path.stat()
    if stat.st_size != recorded["size"]:
        return f"{path.name} is not the file that was recorded ({stat.st_size} bytes, recorded {recorded['size']})"
    if quick and stat.st_mtime_ns == recorded.get("mtime_ns"):
        return None
    if sha256_file(path) != recorded["sha256"]:
        return f"{path.name} is not the file that was recorded (its sha256 differs)"
    return None


def check_file(path: Path, recorded: dict | None, writer: str | None) -> None:
    """Raise ArtifactError naming `path` unless it is the file `writer` recorded."""
    if recorded is None:
        raise ArtifactError(f"{path}: no step's result ({', '.join(f'{w}.json' for w in WRITERS)}) records its "
                            "sha256; re-run the step that writes it (`python -m sam3spec port ... --force` re-runs "
                            "every step)")
    problem = file_problem(path, recorded)
    if problem:
        raise ArtifactError(f"{path}: {problem.split(' ', 1)[1]}: not what {writer} wrote; re-run {writer} "
                            "(`python -m sam3spec port ... --force` re-runs every step)")


WRITERS = ("reference", "compile", "export")  # who wrote a file, latest first: `reference` rebuilds params.bin
                                              # and reference.npz where a library compiled elsewhere is verified


def read_result(directory: Path, step: str) -> dict | None:
    """A step's result (`<step>.json` in `directory`), or None where it has none."""
    path = directory / f"{step}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def recorded(directory: Path, name: str) -> tuple[dict | None, str | None]:
    """The record of file `name` in `directory` and the step that wrote it (the latest writer's ok result);
    (None, None) where no result records it."""
    for writer in WRITERS:
        result = read_result(directory, writer) or {}
        if result.get("status") == "ok" and name in result.get("artifacts", {}):
            return result["artifacts"][name], writer
    return None, None


def checked(directory: Path, name: str) -> Path:
    """directory/name, once it is the file its step recorded (ArtifactError naming it otherwise)."""
    path = directory / name
    check_file(path, *recorded(directory, name))
    return path


def write_json(path: Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def progress(message: str) -> None:
    print(f"[sam3spec {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextmanager
def heartbeat(message: str, every: float = 60.0):
    """While the block runs, say every `every` seconds that `message` is still going, and for how long."""
    done = threading.Event()
    start = time.perf_counter()

    def beat():
        while not done.wait(every):
            progress(f"{message}: still running ({time.perf_counter() - start:.0f} s)")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextmanager
def step(out_dir: Path, name: str):
    """Runs one step; writes out_dir/<name>.json with status, seconds and error, then re-raises failures.

    The block may fill the yielded dict with more fields (e.g. per-output numbers).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"step": name, "status": "running"}
    start = time.perf_counter()
    try:
        yield result
        result["status"] = "ok" if result["status"] == "running" else result["status"]
    except BaseException as exc:
        result["status"] = "failed"
        result["error"] = f"{type(exc).__name__}: {exc}".strip()[:2000]
        result["traceback"] = traceback.format_exc()[-4000:]
        raise
    finally:
        result["seconds"] = round(time.perf_counter() - start, 3)
        write_json(out_dir / f"{name}.json", result)
