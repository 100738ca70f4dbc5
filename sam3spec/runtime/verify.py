"""Run a compiled component on the reference inputs and compare every output with PyTorch's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sam3spec.runtime.artifacts import heartbeat, progress, step
from sam3spec.runtime.loader import DEVICES, Component, device_for


def compare(actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> dict:
    """max_abs, max_rel (|a-e| / |e| where |e| > atol) and whether |a-e| <= atol + rtol*|e| everywhere."""
    if actual.shape != expected.shape:
        return {"ok": False, "error": f"shape {list(actual.shape)} != expected {list(expected.shape)}"}
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    same = (a == e) | (np.isnan(a) & np.isnan(e))          # equal infinities and NaN where torch has NaN
    diff = np.where(same, 0.0, np.abs(a - e))               # NaN where only one side is NaN
    scale = np.where(same, 0.0, np.abs(e))
    big = scale > atol
    return {"max_abs": float(diff.max()) if diff.size else 0.0,  # NaN if any element is NaN on one side only
            "max_rel": float((diff[big] / scale[big]).max()) if big.any() else 0.0,
            "ok": bool((diff <= atol + rtol * scale).all())}


def run(*, component: str, target: dict, tolerances: dict[str, dict], out_dir: str) -> None:
    out = Path(out_dir)
    with step(out, "verify") as result:
        reference = torch.load(out / "reference.pt", weights_only=False)
        if not device_for(target).exist:
            result["status"] = "skipped"
            result["reason"] = f"no {DEVICES[target['kind']]} device on this machine"
            progress(f"{component}: verify skipped ({result['reason']})")
            return
        compiled = Component(out, target)
        if compiled.threads is not None:
            result["threads"] = compiled.threads
        per_output = {name: [] for name in reference["output_names"]}
        for n, case in enumerate(reference["cases"]):
            progress(f"{component}: running on {target['kind']} (case {n + 1}/{len(reference['cases'])})")
            with heartbeat(f"{component}: TVM run"):
                got = compiled(*case["inputs"])
            for name, actual, expected in zip(reference["output_names"], got, case["outputs"]):
                tol = tolerances[name]
                per_output[name].append(compare(actual, expected.numpy(), tol["atol"], tol["rtol"]))
        # per output, the worst case (a shape mismatch has no max_abs: it counts as worst)
        result["outputs"] = [{"name": name, **tolerances[name],
                              **max(runs, key=lambda r: r.get("max_abs", float("inf"))),
                              "ok": all(r["ok"] for r in runs)} for name, runs in per_output.items()]
        failed = [o["name"] for o in result["outputs"] if not o["ok"]]
        if failed:
            raise AssertionError(f"outputs outside tolerance: {', '.join(failed)}")
        summary = ", ".join(f"{o['name']} {o['max_abs']:.2g}" for o in result["outputs"])
        progress(f"{component}: verified (max abs: {summary})")
