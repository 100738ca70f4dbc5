"""Reference inputs and outputs in a form that needs numpy alone (reference.npz), so that a machine with only
the TVM runtime and numpy can verify: ``case{n}/in{i}``, ``case{n}/out{j}`` and the names as JSON; for a
reduced-precision target also PyTorch autocast's outputs on the same inputs, ``case{n}/autocast{j}``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FILE = "reference.npz"


def save(path: Path, input_names: list[str], output_names: list[str], cases: list[dict]) -> None:
    """cases: [{"inputs": [array-like], "outputs": [array-like], "autocast": [array-like] (optional)}]
    (torch tensors are converted)."""
    arrays = {"names": np.array(json.dumps({"inputs": input_names, "outputs": output_names, "cases": len(cases)}))}
    for n, case in enumerate(cases):
        for i, t in enumerate(case["inputs"]):
            arrays[f"case{n}/in{i}"] = _numpy(t)
        for j, t in enumerate(case["outputs"]):
            arrays[f"case{n}/out{j}"] = _numpy(t)
        for j, t in enumerate(case.get("autocast") or []):
            arrays[f"case{n}/autocast{j}"] = _numpy(t)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load(path: Path) -> dict:
    """{"input_names", "output_names", "cases": [{"inputs": [np.ndarray], "outputs": [np.ndarray],
    "autocast": [np.ndarray] or None}]}."""
    with np.load(path) as data:
        names = json.loads(str(data["names"]))
        cases = [{"inputs": [data[f"case{n}/in{i}"] for i in range(len(names["inputs"]))],
                  "outputs": [data[f"case{n}/out{j}"] for j in range(len(names["outputs"]))],
                  "autocast": [data[f"case{n}/autocast{j}"] for j in range(len(names["outputs"]))]
                  if f"case{n}/autocast0" in data else None}
                 for n in range(names["cases"])]
    return {"input_names": names["inputs"], "output_names": names["outputs"], "cases": cases}


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
