"""The schedule pass: each PrimFunc through the rules in order (:mod:`.function_rules`; the first that gives a
schedule wins), every result test-lowered, with a safe-mode retry and the unscheduled function as the fallback;
never fails a build."""

from __future__ import annotations

import logging

import tvm
from tvm import tirx
from tvm.ir import IRModule

from sam3spec.pipelines import records
from sam3spec.pipelines.cpu import function_rules
from sam3spec.pipelines.cpu.config import DEFAULT_CFG, TileConfig

logger = logging.getLogger(__name__)


def schedule_prim_func(
    func: tirx.PrimFunc,
    cfg: TileConfig | None = None,
    stats: dict | None = None,
    fname: str = "main",
    target: tvm.target.Target | None = None,
    rules=function_rules.DEFAULT,
) -> tirx.PrimFunc:
    """Apply the rules to one PrimFunc. Never raises; returns `func` if unschedulable.

    ``stats`` (optional dict) counts blocks per rule (``attention``, ``row_reduction``, ``spatial``,
    ``contraction``, ``reduction``, ``empty``, ``unscheduled``) and lists rule errors under ``errors``.
    ``target`` enables the row-reduction rule. ``rules``: names (:data:`function_rules.DEFAULT`).
    """
    cfg = cfg or DEFAULT_CFG
    for rule in function_rules.make(rules, cfg, stats, fname):
        try:
            sch = rule.apply(func, target, False)
        except Exception as err:  # pylint: disable=broad-except
            logger.debug("cpu: rule %s failed on %s", type(rule).__name__, fname, exc_info=True)
            if not isinstance(rule, function_rules.RowReductions):  # dlight's Reduction declines by raising
                function_rules.record_error(stats, f"{fname}/{type(rule).__name__}", err)
            continue
        if isinstance(sch, list):
            sch = sch[0] if sch else None
        if sch is not None:
            return sch.mod["main"]
    return func


def lowers(func: tirx.PrimFunc, target: tvm.target.Target) -> bool:
    """Whether `func` gets through the default TIR lowering (no LLVM codegen)."""
    try:
        mod = IRModule({"main": func.with_attr("global_symbol", "main")})
        host = target.host if target.host is not None else target
        with target:
            mod = tirx.transform.BindTarget(target.with_host(host))(mod)
            lower, finalize_host, _ = tirx.get_tir_pipeline("default")
            finalize_host()(lower(mod))
        return True
    except Exception:  # pylint: disable=broad-except
        logger.debug("cpu_basic: lowering check failed", exc_info=True)
        return False


def schedule_pass(
    target: tvm.target.Target | None = None, stats: dict | None = None, verify: bool = True,
    rules=function_rules.DEFAULT,
):
    """IRModule pass scheduling every PrimFunc without ``tirx.is_scheduled``.

    With ``verify`` (default) every scheduled PrimFunc is run through the TIR
    lowering passes; if that fails it is rescheduled in safe mode (no loop
    fusion) and, if that fails too, left unscheduled (stats["fallback"] lists them).
    """

    @tvm.transform.module_pass(opt_level=0, name="CPUBasicSchedule")
    def _pass(mod: IRModule, _ctx) -> IRModule:  # pylint: disable=unused-argument
        tgt = target or tvm.target.Target.current(allow_none=True)
        cfg = TileConfig.for_target(tgt)
        updates = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or records.scheduled(func):
                continue
            name = gvar.name_hint
            new = schedule_prim_func(func, cfg, stats, name, tgt, rules)
            if new is func:
                continue
            if verify and tgt is not None and not lowers(new, tgt):
                new = schedule_prim_func(func, cfg.safe(), None, name, rules=rules)
                ok = new is not func and lowers(new, tgt)
                if stats is not None:
                    stats.setdefault("fallback", []).append(
                        f"{name}: {'safe mode' if ok else 'unscheduled'}"
                    )
                if not ok:
                    continue
            updates[gvar] = new.with_attr("tirx.is_scheduled", True)
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod

    return _pass
