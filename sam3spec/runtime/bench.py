"""Latency of each compiled component against PyTorch eager on the same input and thread count, the two
alternated call by call so that both see the same machine state; medians, ratio, FLOPs and GFLOP/s."""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import torch

from sam3spec.runtime import model as model_lib, onnx_peer, samples
from sam3spec.runtime.artifacts import heartbeat, progress
from sam3spec.runtime.loader import Component
from sam3spec.runtime.resolve import resolve

MIN_SECONDS = 2.0  # per side: small components get more repeats
# idle before each runtime's turn: the last one's worker threads spin on after its call (libgomp's, ONNX Runtime's,
# TVM's pool) and took the cores from the next (2 cores, scoring_box_head: TVM 6.4 ms, PyTorch 8.3 interleaved
# without it; 3.7 and 4.2 with it, as each alone in a loop: 3.5 and 4.5)
SETTLE_S = 0.2


def repeats_for(seconds_per_call: float, minimum: int, maximum: int = 50) -> int:
    """Enough repeats for MIN_SECONDS per side, within [minimum, maximum]."""
    return max(minimum, min(maximum, math.ceil(MIN_SECONDS / max(seconds_per_call, 1e-6))))


def flops(module, args) -> int:
    """Multiply-add FLOPs of one call (matmul, conv, attention) as torch.utils.flop_counter counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    # its module tracker hooks outputs that require grad; an adapter may return a parameter as it is
    grads = {p: p.requires_grad for p in module.parameters()}
    try:
        for p in grads:
            p.requires_grad_(False)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(*args)
    finally:
        for p, g in grads.items():
            p.requires_grad_(g)
    return int(counter.get_total_flops())


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(torch_call, tvm_call, repeats: int | None, min_repeats: int, peers: dict | None = None) -> dict:
    """One warm-up each, then `repeats` turns alternating torch, tvm and each of `peers` (name -> call); each turn
    waits SETTLE_S, makes an untimed call, then the timed one. Right after another runtime a call is slower while
    that one's threads, memory and caches wind down (the ViT trunk 20.2 s against 18.4 s), for either runtime; the
    wait and the untimed call absorb that, so all are measured warm on a quiet machine. Per-call seconds."""
    calls = {"torch": torch_call, "tvm": tvm_call, **(peers or {})}
    warm = [_timed(call) for call in calls.values()]
    n = repeats or repeats_for(max(warm), min_repeats)
    times = {name: [] for name in calls}
    for _ in range(n):
        for name, call in calls.items():
            time.sleep(SETTLE_S)
            call()
            times[name].append(_timed(call))
    out = {"repeats": n, "settle_s": SETTLE_S}
    for name in calls:
        out[f"{name}_s"], out[f"{name}_median_s"] = times[name], statistics.median(times[name])
    out["ratio"] = out["tvm_median_s"] / out["torch_median_s"]
    for name in peers or {}:
        out[f"ratio_{name}"] = out["tvm_median_s"] / out[f"{name}_median_s"]
    return out


def onnx_peer_for(component_dir: Path, module, args, threads: int) -> tuple[dict, dict]:
    """({"ort": call} or {}, what bench.json says of ONNX Runtime for this component: its max abs difference to
    PyTorch, or why it did not run)."""
    if reason := onnx_peer.missing():
        return {}, {"status": "not run", "reason": reason}
    try:
        path = onnx_peer.exported(component_dir, args)
        call, outputs = onnx_peer.session(path, args, threads)
        with torch.no_grad():
            error = onnx_peer.max_abs(outputs, module(*args))
    except Exception as exc:  # noqa: BLE001 - an op torch.onnx or ONNX Runtime does not take: say which
        return {}, {"status": "failed", "reason": failure_reason(exc)}
    return {"ort": call}, {"status": "ok", "max_abs_vs_pytorch": error}


def failure_reason(exc: BaseException) -> str:
    """'Type: last line' of an exception and, where it was raised from another, 'Type: first line' of the innermost
    one (torch.onnx's ConversionError ends "Refer to the full stack trace above"; the error it wraps says what)."""

    def _line(e: BaseException, which: int = -1) -> str:
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        return f"{type(e).__name__}: {lines[which][:300] if lines else ''}"

    inner, seen = exc, {id(exc)}
    while (nxt := inner.__cause__ or inner.__context__) is not None and id(nxt) not in seen:
        inner = nxt
        seen.add(id(inner))
    return _line(exc) if inner is exc else f"{_line(exc)} <- {_line(inner, 0)}"


def _pytorch_setting(where: str, autocast: str | None) -> str:
    """How PyTorch ran, in words."""
    if autocast:
        return f"eager {where}, autocast {autocast}"
    return f"eager {where}, float32" + (" with TF32 off (strict); the TF32 columns with TF32 matmuls and "
                                        "convolutions on, as sam3's model_builder sets them" if where == "cuda" else "")


def tf32(on: bool) -> None:
    """TF32 tensor cores for PyTorch's float32 matmuls and convolutions (sam3 turns them on at import)."""
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def run(*, model: dict, manifest_dir: str, components: list[dict], target: dict, build_dir: str,
        seed: int, repeats: int | None = None, min_repeats: int = 3, autocast: str | None = None) -> list[dict]:
    """components: [{name, adapter, inputs, dims}] compiled under build_dir/<name>/. On a cuda target both run
    on the GPU (PyTorch eager in float32, or under torch.autocast to `autocast` where the TVM pipeline computes in
    that type (pipeline option mixed_precision): what PyTorch users run), each call
    waited for; on llvm, on this CPU."""
    gpu = target["kind"] == "cuda"
    where = "cuda" if gpu else "cpu"
    net = model_lib.build_substituted(model, Path(manifest_dir))
    results = []
    for i, comp in enumerate(components, 1):
        progress(f"bench [{i}/{len(components)}] {comp['name']}")
        module = resolve(comp["adapter"])(model_lib.adapter_root(model, net)).eval().to(where)
        example = {name: d["example"] for name, d in comp["dims"].items()}
        args = samples.make_all(comp["inputs"], example, seed)
        compiled = Component(Path(build_dir) / comp["name"], target)
        tvm_args = compiled.tensors(args)
        args = [a.to(where) for a in args]
        context = torch.autocast(where, dtype=getattr(torch, autocast or "float32"), enabled=autocast is not None)

        def torch_call(module=module, args=args, context=context):
            with torch.no_grad(), context:
                module(*args)
            if gpu:
                torch.cuda.synchronize()

        def tvm_call(compiled=compiled, tvm_args=tvm_args):
            compiled.run_tensors(tvm_args)
            compiled.device.sync()

        peers, onnx = ({}, None) if gpu else onnx_peer_for(Path(build_dir) / comp["name"], module, args,
                                                            torch.get_num_threads())
        with heartbeat(f"bench {comp['name']}"):
            strict = gpu and autocast is None  # float32 on a GPU: against strict fp32, and against TF32 too
            if strict:
                tf32(False)
            timing = measure(torch_call, tvm_call, repeats, min_repeats, peers)
            if strict:
                tf32(True)
                with_tf32 = measure(torch_call, tvm_call, repeats, min_repeats)
                timing.update(torch_tf32_median_s=with_tf32["torch_median_s"], tvm_median_s_tf32_run=with_tf32["tvm_median_s"],
                              ratio_tf32=with_tf32["tvm_median_s"] / with_tf32["torch_median_s"])
        count = flops(module, args)
        results.append({"component": comp["name"], "dims": example, "threads": torch.get_num_threads(),
                        "pytorch": _pytorch_setting(where, autocast),
                        "tvm_threads": compiled.threads, "flops": count, **({"onnxruntime": onnx} if onnx else {}),
                        "tvm_gflops": count / timing["tvm_median_s"] / 1e9,
                        "torch_gflops": count / timing["torch_median_s"] / 1e9, **timing})
        progress(f"bench {comp['name']}: TVM {timing['tvm_median_s'] * 1e3:.1f} ms, PyTorch "
                 f"{timing['torch_median_s'] * 1e3:.1f} ms, ratio {timing['ratio']:.2f} ({timing['repeats']} repeats)"
                 + (f"; ONNX Runtime {timing['ort_median_s'] * 1e3:.1f} ms" if "ort_median_s" in timing else
                    f"; ONNX Runtime {onnx['status']}: {onnx['reason']}" if onnx else ""))
        del compiled, module
    return results
