"""Run a compiled component on the reference inputs and compare every output with PyTorch's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sam3spec.runtime.artifacts import heartbeat, progress, step

DEVICES = {"llvm": "cpu", "cuda": "cuda", "metal": "metal"}


def compare(actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> dict:
    """max_abs, max_rel (|a-e| / |e| where |e| > atol) and whether |a-e| <= atol + rtol*|e| everywhere."""
    if actual.shape != expected.shape:
        return {"ok": False, "error": f"shape {list(actual.shape)} != expected {list(expected.shape)}"}
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    diff = np.abs(a - e)
    big = np.abs(e) > atol
    finite = bool(np.isfinite(a).all() == np.isfinite(e).all() and (np.isnan(a) == np.isnan(e)).all())
    diff = np.where(np.isnan(a) & np.isnan(e), 0.0, diff)
    return {"max_abs": float(diff.max()) if diff.size else 0.0,
            "max_rel": float((diff[big] / np.abs(e[big])).max()) if big.any() else 0.0,
            "ok": finite and bool((diff <= atol + rtol * np.abs(e)).all())}


def run(*, component: str, target: dict, tolerances: dict[str, dict], out_dir: str) -> None:
    import tvm
    from tvm import relax

    out = Path(out_dir)
    with step(out, "verify") as result:
        reference = torch.load(out / "reference.pt", weights_only=False)
        device = getattr(tvm, DEVICES[target["kind"]])()
        if not device.exist:
            result["status"] = "skipped"
            result["reason"] = f"no {DEVICES[target['kind']]} device on this machine"
            progress(f"{component}: verify skipped ({result['reason']})")
            return
        library = tvm.runtime.load_module(str(out / ("lib.tar" if target["kind"] == "metal" else "lib.so")))
        vm = relax.VirtualMachine(library, device)
        params = tvm.runtime.load_param_dict((out / "params.bin").read_bytes())
        weights = [tvm.runtime.tensor(params[f"p{i}"].numpy(), device) for i in range(len(params))]
        outputs = {}
        for n, case in enumerate(reference["cases"]):
            progress(f"{component}: running on {target['kind']} (case {n + 1}/{len(reference['cases'])})")
            args = [tvm.runtime.tensor(t.numpy(), device) for t in case["inputs"]]
            with heartbeat(f"{component}: TVM run"):
                got = vm["main"](*args, *weights)
            got = [got[i] for i in range(len(got))] if isinstance(got, tvm.ir.Array) or hasattr(got, "__len__") else [got]
            for name, actual, expected in zip(reference["output_names"], got, case["outputs"]):
                tol = tolerances[name]
                r = compare(actual.numpy(), expected.numpy(), tol["atol"], tol["rtol"])
                prev = outputs.get(name)
                if prev is None or not r["ok"] or r.get("max_abs", 0) > prev.get("max_abs", 0):
                    outputs[name] = {"name": name, **tol, **r, "ok": r["ok"] and (prev is None or prev["ok"])}
        result["outputs"] = [outputs[n] for n in reference["output_names"]]
        failed = [o["name"] for o in result["outputs"] if not o["ok"]]
        if failed:
            raise AssertionError(f"outputs outside tolerance: {', '.join(failed)}")
        summary = ", ".join(f"{o['name']} {o['max_abs']:.2g}" for o in result["outputs"])
        progress(f"{component}: verified (max abs: {summary})")
