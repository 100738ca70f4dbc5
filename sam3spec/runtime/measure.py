"""How tuning builds and times kernels: MetaSchedule's builder and runner (on this machine, or on a device that
TVM's RPC tracker holds under a key). This module imports neither torch nor TVM at load: the builder's worker
processes import it to find `build`."""

from __future__ import annotations

EVALUATOR = {"number": 3, "repeat": 1, "min_repeat_ms": 100, "enable_cpu_cache_flush": False}
BUILD_TIMEOUT_S = 300


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


def runner(tracker: dict | None):
    """On this machine, or through TVM's RPC tracker (`address` HOST:PORT, `key`) on a device it holds."""
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(**EVALUATOR)
    if not tracker:
        return ms.runner.LocalRunner(evaluator_config=evaluator)
    host, _, port = tracker["address"].rpartition(":")
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=tracker["key"],
                                 session_timeout_sec=120)
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator)


def seconds(func_mod, target, run) -> tuple[float | None, str | None]:
    """Seconds per call of an already scheduled TIR module, built and timed as MetaSchedule times candidates
    (None and why, where it does not build or run)."""
    from tvm.s_tir import meta_schedule as ms

    built = builder().build([ms.builder.BuilderInput(func_mod, target)])[0]
    if built.error_msg:
        return None, _last_line(built.error_msg)
    args = ms.arg_info.ArgInfo.from_prim_func(func_mod["main"])
    device = "cpu" if target.kind.name == "llvm" else target.kind.name  # tvm.device's name for LLVM's code
    result = run.run([ms.runner.RunnerInput(built.artifact_path, device, args)])[0].result()
    if result.error_msg:
        return None, _last_line(result.error_msg)
    secs = [float(s) for s in result.run_secs]
    return sum(secs) / len(secs), None


def _last_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
