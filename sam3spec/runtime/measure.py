"""How tuning builds and times kernels: MetaSchedule's builder and runner (on this machine, or on a device that
TVM's RPC tracker holds under a key). This module imports neither torch nor TVM at load: the builder's worker
processes import it to find `build`."""

from __future__ import annotations

EVALUATOR = {"number": 2, "repeat": 1, "min_repeat_ms": 50, "enable_cpu_cache_flush": False}
BUILD_TIMEOUT_S = 300
RUN_TIMEOUT_S = 120  # the rules' own measurement; candidates get `candidate_timeout` of it
SLOWER = 8  # a candidate more than this many times slower than the rules is cut off (a 98 GFLOP convolution
# ran ~0.5 s with the rules: MetaSchedule's first random candidates can take minutes each)


def build(mod, target, _params):
    """MetaSchedule's default build without its `import tvm.s_tir.tensor_intrin`, which parses every target's
    intrinsics in each fresh builder process (33 s here: the builder starts new processes for every batch).
    The candidates are already scheduled, tensorized ones included: building them needs no registry."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def builder(workers: int = 1):
    from tvm.s_tir import meta_schedule as ms

    return ms.builder.LocalBuilder(max_workers=workers, timeout_sec=BUILD_TIMEOUT_S, f_build=build)


def candidate_timeout(rules_secs: float | None) -> float:
    """Seconds a candidate may run (warm-up and timed calls): SLOWER x what the rules took, at least 5 s."""
    calls = 1 + EVALUATOR["number"] * EVALUATOR["repeat"]
    return RUN_TIMEOUT_S if rules_secs is None else min(RUN_TIMEOUT_S, max(5.0, SLOWER * rules_secs * calls))


# the final comparison of the rules' schedule with the best record: more calls, the median of five repeats (the
# search's single repeat moved by up to 60% between runs on this 2-core machine: 3.3 ms and 5.3 ms, one kernel)
FINAL = {"number": 3, "repeat": 5, "min_repeat_ms": 100, "enable_cpu_cache_flush": False}


def runner(tracker: dict | None, timeout_s: float = RUN_TIMEOUT_S, evaluator: dict | None = None):
    """On this machine, or through TVM's RPC tracker (`address` HOST:PORT, `key`) on a device it holds."""
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(**(evaluator or EVALUATOR))
    if not tracker:
        return ms.runner.LocalRunner(timeout_sec=timeout_s, evaluator_config=evaluator)
    host, _, port = tracker["address"].rpartition(":")
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=tracker["key"],
                                 session_timeout_sec=int(timeout_s) + 30)
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator)


def seconds(func_mod, target, run) -> tuple[float | None, str | None]:
    """Seconds per call of an already scheduled TIR module, built and timed as MetaSchedule times candidates
    (None and why, where it does not build or run)."""
    return timed([func_mod], target, run)[0]


def timed(func_mods: list, target, run) -> list[tuple[float | None, str | None]]:
    """Each scheduled TIR module built, then all run one after the other by `run`: (median seconds per call of
    its repeats, None), or (None, why) where one does not build or run."""
    import statistics

    from tvm.s_tir import meta_schedule as ms

    built = builder().build([ms.builder.BuilderInput(m, target) for m in func_mods])
    device = "cpu" if target.kind.name == "llvm" else target.kind.name  # tvm.device's name for LLVM's code
    inputs = [ms.runner.RunnerInput(b.artifact_path, device, ms.arg_info.ArgInfo.from_prim_func(m["main"]))
              for m, b in zip(func_mods, built) if not b.error_msg]
    results = iter([f.result() for f in run.run(inputs)] if inputs else [])
    out = []
    for b in built:
        if b.error_msg:
            out.append((None, last_line(b.error_msg)))
            continue
        r = next(results)
        out.append((None, last_line(r.error_msg)) if r.error_msg else
                   (statistics.median(float(s) for s in r.run_secs), None))
    return out


def mean_secs(run_secs) -> float:
    """The mean of a MetaSchedule result's or record's run_secs (TVM float objects), in seconds."""
    import statistics

    return statistics.fmean(float(s) for s in run_secs)


def last_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def export_shared(rt_mod) -> str:
    """A built candidate as a shared library (device code embedded), which TVM's runtime alone loads: the staged
    tuning's device has no compiler to link MetaSchedule's default tar archive."""
    import os
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="sam3spec-candidate-"), "kernel.so")
    rt_mod.export_library(path)
    return path
