"""Which checkpoint a build loads (the environment variable the manifest names, then the manifest), and the
record of which weights a build holds; no torch, so the port command can key its steps on it."""

from __future__ import annotations

import os
from pathlib import Path


def checkpoint_path(weights: dict, manifest_dir: Path) -> Path | None:
    """The checkpoint to load: the environment variable named by the manifest wins, then the manifest."""
    env = weights.get("checkpoint_env")
    if env and os.environ.get(env):
        path = Path(os.environ[env])
    elif weights.get("checkpoint"):
        path = manifest_dir / weights["checkpoint"]
    else:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (from {'$' + env if env and os.environ.get(env) else 'the manifest'})")
    return path


def weights_source(weights: dict, manifest_dir: Path) -> dict:
    """Which weights a build gets: the seed, and the checkpoint (absolute path and size) when there is one.
    Recorded in export.json, so that a run on the compiled artifacts can say which weights they hold."""
    ckpt = checkpoint_path(weights, manifest_dir)
    return {"seed": weights["seed"], "checkpoint": str(ckpt.resolve()) if ckpt else None,
            "checkpoint_bytes": ckpt.stat().st_size if ckpt else None}
