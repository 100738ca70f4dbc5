"""Files under build/: written atomically (temp file, then rename) so nothing is left half-written."""

from __future__ import annotations

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
