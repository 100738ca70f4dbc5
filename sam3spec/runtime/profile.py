"""Where a compiled component's time goes, kernel by kernel: the VM's instrument hook waits for the device
before and after every call it makes (a kernel, a library call, an allocation), so each call's wall time is its
own. The waits add a little per call: the total is above what `bench` measures, and the shares are what count.
Needs only the TVM runtime and numpy."""

from __future__ import annotations

import re
import time
from pathlib import Path

from sam3spec.runtime import reference
from sam3spec.runtime.artifacts import checked, progress, write_json
from sam3spec.runtime.loader import Component

# What a kernel computes, from its name (TVM names fused kernels after their ops), first match wins; a kernel
# with a square trailing [..., n, n] argument (n >= 256: a score matrix) is attention's.
KINDS = (("matmul", r"matmul|dense"), ("convolution", r"conv"), ("softmax", r"softmax"),
         ("normalisation", r"norm|mean|variance"), ("layout (transpose, reshape, concat)", r"transpose|reshape|concat|permute|split|take|strided_slice"),
         ("elementwise", r"add|multiply|subtract|divide|gelu|tanh|sigmoid|exp|erf|cast|where|power|sqrt|maximum|minimum"))


def kind_of(name: str, shapes: list[tuple]) -> str:
    square = any(len(s) >= 2 and s[-1] == s[-2] >= 256 for s in shapes)
    for kind, pattern in KINDS:
        if re.search(pattern, name):
            return f"attention {kind}" if square else kind
    return "attention other" if square else "other"


def _shapes(args) -> list[tuple]:
    return [tuple(int(d) for d in a.shape) for a in args if hasattr(a, "shape")]


def run(out_dir: str, target: dict, runs: int = 3) -> dict:
    """Profile `runs` calls of the component compiled under out_dir on its reference inputs; writes
    profile.json there and returns it: per kernel calls and milliseconds per run, sorted, and per kind."""
    out = Path(out_dir)
    compiled = Component(out, target)
    inputs = compiled.tensors(reference.load(checked(out, reference.FILE))["cases"][0]["inputs"])
    compiled.run_tensors(inputs)  # warm: the CUDA JIT, the pooled allocator
    compiled.device.sync()
    times: dict[str, list[float]] = {}
    shapes: dict[str, list[tuple]] = {}
    started: list[float] = []

    def instrument(_func, symbol, before, _ret, *args):
        compiled.device.sync()
        if before:
            shapes.setdefault(str(symbol), _shapes(args))
            started.append(time.perf_counter())
        else:
            times.setdefault(str(symbol), []).append(time.perf_counter() - started.pop())
        return 0  # VMInstrumentReturnKind.NoOp

    whole = []
    for n in range(runs):
        compiled.vm.set_instrument(instrument)
        start = time.perf_counter()
        compiled.run_tensors(inputs)
        compiled.device.sync()
        whole.append(time.perf_counter() - start)
        progress(f"profile run {n + 1}/{runs}: {whole[-1] * 1e3:.1f} ms")
    kernels = sorted(({"name": name, "calls": len(t) // runs, "ms": sum(t) / runs * 1e3,
                       "kind": kind_of(name, shapes[name]), "shapes": [list(x) for x in shapes[name]]}
                      for name, t in times.items()), key=lambda k: -k["ms"])
    total = sum(k["ms"] for k in kernels)
    by_kind: dict[str, float] = {}
    for k in kernels:
        by_kind[k["kind"]] = by_kind.get(k["kind"], 0.0) + k["ms"]
    result = {"runs": runs, "instrumented_ms": min(whole) * 1e3, "calls_ms": total,
              "by_kind": [{"kind": kind, "ms": ms, "share": ms / total} for kind, ms in
                          sorted(by_kind.items(), key=lambda kv: -kv[1])],
              "kernels": [{**k, "share": k["ms"] / total} for k in kernels]}
    write_json(out / "profile.json", result)
    return result


def markdown(name: str, result: dict, top: int = 15) -> str:
    lines = [f"## {name}: {result['calls_ms']:.1f} ms in {sum(k['calls'] for k in result['kernels'])} calls "
             f"(each waited for; {result['instrumented_ms']:.1f} ms per instrumented run)", "",
             "| kind | ms | share |", "|---|---|---|"]
    lines += [f"| {k['kind']} | {k['ms']:.2f} | {k['share']:.1%} |" for k in result["by_kind"]]
    lines += ["", "| kernel | kind | calls | ms | share |", "|---|---|---|---|---|"]
    lines += [f"| `{k['name']}` | {k['kind']} | {k['calls']} | {k['ms']:.2f} | {k['share']:.1%} |"
              for k in result["kernels"][:top]]
    return "\n".join(lines) + "\n"
