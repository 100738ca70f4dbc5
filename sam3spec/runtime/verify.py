"""Run a compiled component on the reference inputs and compare every output with PyTorch's. Needs only
the TVM runtime and numpy: it runs on a GPU machine with no compiler, or drives a Mac over TVM's RPC."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from sam3spec.runtime import reference
from sam3spec.runtime.artifacts import checked, heartbeat, progress, step
from sam3spec.runtime.loader import DEVICES, Component, device_for

# What to run where the target's device is not on this machine, by target kind.
HOW_TO_VERIFY = {
    "metal": "on a Mac with Apple silicon run `nox -s port-metal -- {manifest}`; or start "
             "`python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090` on the Mac and run "
             "`nox -s port-metal -- {manifest} --rpc MAC_ADDRESS:9090` here",
    "cuda": "copy the repository with build/ to a machine with an NVIDIA GPU and the TVM runtime and run "
            "`python -m sam3spec port {manifest} --target TARGET --verify-only` there (README: CUDA)",
}


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


def autocast_rule(tvm_runs: list[dict], autocast_runs: list[dict], factor: float) -> dict:
    """A reduced-precision output passes when TVM's max abs error against the fp32 reference is at most
    `factor` times PyTorch autocast's on the same inputs (its worst case against the worst case), or within the
    output's fp32 tolerance (`ok` of tvm_runs) where autocast is (near) exact, as for outputs it leaves in fp32."""
    worst = max(r.get("max_abs", float("inf")) for r in tvm_runs)
    bound = factor * max(r["max_abs"] for r in autocast_runs)
    return {"autocast_max_abs": bound / factor, "factor": factor, "bound": bound,
            "ok": bool(worst <= bound or all(r["ok"] for r in tvm_runs))}


def host_port(address: str) -> tuple[str, int]:
    """HOST:PORT as (host, port); ValueError if it is not that."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--rpc {address!r}: need HOST:PORT")
    return host, int(port)


def endpoint_problem(address: str, kind: str, handshake, usage: str,
                     start: str = "") -> tuple[str | None, object]:
    """(why HOST:PORT is no TVM RPC `kind` (server, tracker) that `handshake(host, port)` gets through, or None;
    the handshake's result): a socket probe first (TVM's own connect retries for a minute where nothing
    listens), then the handshake, whose error's last line is the reason. `usage` is the hint for an address
    that is not HOST:PORT, `start` (with {port}) the one for an endpoint that does not answer."""
    import socket

    try:
        host, port = host_port(address)
    except ValueError:
        return f"need HOST:PORT ({usage})", None
    hint = f"; {start.format(port=port)}" if start else ""
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as exc:
        return f"no TVM RPC {kind} answers there: nothing listens ({exc.strerror or exc}){hint}", None
    try:
        return None, handshake(host, port)
    except Exception as exc:  # noqa: BLE001 - TVM raises its own error types for a refused or failed handshake
        return f"no TVM RPC {kind} answers there ({str(exc).strip().splitlines()[-1][:200]}){hint}", None


def connect(address: str):
    """A TVM RPC session to HOST:PORT (a `python -m tvm.exec.rpc_server` there)."""
    from tvm import rpc

    return rpc.connect(*host_port(address))


def run(*, component: str, target: dict, tolerances: dict[str, dict], out_dir: str, manifest: str = "",
        rpc: str | None = None, rule: dict | None = None) -> None:
    """rule: {"autocast": dtype, "factor": f}: a reduced-precision target's outputs are held to
    :func:`autocast_rule` (the reference holds autocast's outputs) instead of the tolerances alone."""
    out = Path(out_dir)
    with step(out, "verify") as result:
        ref = reference.load(checked(out, reference.FILE))
        remote = connect(rpc) if rpc else None
        where = f"RPC server {rpc}" if rpc else f"this machine ({platform.system()} {platform.machine()})"
        if not device_for(target, remote).exist:
            result["status"] = "skipped"
            result["reason"] = f"no {DEVICES[target['kind']]} device on {where}"
            result["how"] = HOW_TO_VERIFY.get(target["kind"], "").format(manifest=manifest)
            progress(f"{component}: compiled, not verified ({result['reason']})")
            return
        result["where"] = where
        if rule and any(case["autocast"] is None for case in ref["cases"]):
            raise ValueError(f"{reference.FILE} has no PyTorch autocast outputs for the {rule['autocast']} rule (their "
                             f"device was not where it was made: {rule.get('device')}): rebuild it where that device "
                             "is, `port --verify-only` after removing reference.npz, or `port --force`")
        compiled = Component(out, target, remote)
        if compiled.threads is not None:
            result["threads"] = compiled.threads
        per_output = {name: [] for name in ref["output_names"]}
        per_autocast = {name: [] for name in ref["output_names"]}
        for n, case in enumerate(ref["cases"]):
            progress(f"{component}: running on {target['kind']} at {where} (case {n + 1}/{len(ref['cases'])})")
            with heartbeat(f"{component}: TVM run"):
                got = compiled(*case["inputs"])
            for j, (name, actual, expected) in enumerate(zip(ref["output_names"], got, case["outputs"])):
                tol = tolerances[name]
                per_output[name].append(compare(actual, expected, tol["atol"], tol["rtol"]))
                if rule:
                    per_autocast[name].append(compare(case["autocast"][j], expected, tol["atol"], tol["rtol"]))
        # per output, the worst case (a shape mismatch has no max_abs: it counts as worst)
        result["outputs"] = [{"name": name, **tolerances[name],
                              **max(runs, key=lambda r: r.get("max_abs", float("inf"))),
                              "ok": all(r["ok"] for r in runs),
                              **(autocast_rule(runs, per_autocast[name], rule["factor"]) if rule else {})}
                             for name, runs in per_output.items()]
        if rule:
            result["rule"] = (f"max abs error <= {rule['factor']:g} x PyTorch autocast {rule['autocast']}'s "
                              f"(on {rule['device']}, same inputs), or within the fp32 tolerance")
        failed = [o["name"] for o in result["outputs"] if not o["ok"]]
        if failed:
            raise AssertionError(f"outputs outside tolerance: {', '.join(failed)}")
        summary = ", ".join(f"{o['name']} {o['max_abs']:.2g}" + (f" (autocast {o['autocast_max_abs']:.2g})"
                                                                  if rule else "") for o in result["outputs"])
        progress(f"{component}: verified on {where} (max abs: {summary})")
