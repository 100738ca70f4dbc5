"""Manifest files to validated manifests or a plan, every error printed as a located line (the first step
of every command that reads a manifest)."""

from __future__ import annotations

import sys
from pathlib import Path

from sam3spec import manifest as manifest_lib, plan as plan_lib

EXIT_INVALID = 2  # a manifest, argument or input that cannot be used


def root() -> Path:
    """The repository the command runs in: manifests/, templates/, generated/ and build/ are under it."""
    return Path.cwd()


def load_all(paths: list[str]) -> list[manifest_lib.Manifest] | None:
    """Load and validate; prints every error as FILE:LINE:COL: key.path: message and returns None on any."""
    loaded, failed = [], False
    for path in paths:
        try:
            loaded.append(manifest_lib.load(path))
        except manifest_lib.ManifestErrors as exc:
            failed = True
            for error in exc.errors:
                print(error, file=sys.stderr)
    return None if failed else loaded


def load_plan(manifest: str, root: Path) -> plan_lib.Plan | None:
    """The manifest's plan; None, its errors printed, if it is not valid."""
    manifests = load_all([manifest])
    return None if manifests is None else plan_lib.make(manifests[0], root)
