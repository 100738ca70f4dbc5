"""The CPU rules in dlight's protocol (``apply(func, target, tunable) -> Schedule | None``, a
``tvm.s_tir.dlight.ScheduleRule`` each), so that they, dlight's own rules and the tuning records compose as one
ordered list a target's ``pipeline_options.rules`` names; the first rule that returns a schedule wins."""

from __future__ import annotations

import logging

from tvm.ir import IRModule
from tvm.s_tir import Schedule
from tvm.s_tir import dlight as dl

from sam3spec.pipelines import attention
from sam3spec.pipelines.cpu.analysis import const, is_spatial_block, root_block
from sam3spec.pipelines.cpu.config import TileConfig
from sam3spec.pipelines.cpu.contraction import rule_contraction
from sam3spec.pipelines.cpu.inline import rule_inline
from sam3spec.pipelines.cpu.reduction import rule_reduction
from sam3spec.pipelines.cpu.row_reduction import rule_row_reductions
from sam3spec.pipelines.cpu.spatial import rule_spatial
from sam3spec.pipelines.cpu import winograd

logger = logging.getLogger(__name__)

RECORDS = "records"  # the tuning records: MetaScheduleApplyDatabase, a pass before all rules, so first or absent
DEFAULT = (RECORDS, "attention", "winograd", "row_reductions", "blocks")


def count(stats: dict | None, key: str, n: int = 1) -> None:
    if stats is not None:
        stats[key] = stats.get(key, 0) + n


def record_error(stats: dict | None, where: str, err: Exception) -> None:
    """stats["errors"] gets `where: Type: last line of the message` (TVM's errors print the whole IR)."""
    if stats is not None:
        msg = str(err).strip().splitlines()
        stats.setdefault("errors", []).append(f"{where}: {type(err).__name__}: {msg[-1] if msg else ''}")


class FusedAttention(dl.ScheduleRule):
    """softmax(q k^T) v fused by :mod:`sam3spec.pipelines.attention`: its own schedule (blocks of query rows)."""

    def __init__(self, cfg: TileConfig, stats: dict | None = None):
        self.cfg, self.stats = cfg, stats

    def apply(self, func, target, tunable):  # pylint: disable=unused-argument
        if func.attrs is None or attention.ATTR not in func.attrs:
            return None
        sch = Schedule(IRModule({"main": func}))
        attention.schedule(sch, self.cfg.vec_lanes, self.cfg.row_tile, self.cfg.col_tile)
        count(self.stats, "attention")
        return sch


class Winograd(dl.ScheduleRule):
    """3x3 convolutions rewritten by :mod:`sam3spec.pipelines.cpu.winograd`: its hand schedule, the product by the
    contraction rule."""

    def __init__(self, cfg: TileConfig, stats: dict | None = None):
        self.cfg, self.stats = cfg, stats

    def apply(self, func, target, tunable):  # pylint: disable=unused-argument
        if func.attrs is None or winograd.ATTR not in func.attrs:
            return None
        sch = Schedule(IRModule({"main": func}))
        winograd.schedule(sch, lambda s, block: rule_contraction(s, block, self.cfg), self.cfg.vec_lanes)
        count(self.stats, "winograd")
        return sch


class RowReductions(dl.ScheduleRule):
    """:func:`sam3spec.pipelines.cpu.row_reduction.rule_row_reductions`, counting the blocks it schedules."""

    def __init__(self, cfg: TileConfig, stats: dict | None = None):
        self.cfg, self.stats = cfg, stats

    def apply(self, func, target, tunable):  # pylint: disable=unused-argument
        sch = rule_row_reductions(func, target, self.cfg)
        if sch is not None:
            before = Schedule(IRModule({"main": func}))
            count(self.stats, "row_reduction", len(before.get_child_blocks(root_block(before))))
        return sch


class Blocks(dl.ScheduleRule):
    """Block by block: inline (:mod:`.inline`), then each block's rule (:mod:`.spatial`, :mod:`.contraction`,
    :mod:`.reduction`); a block whose rule fails stays as it was. None where no block could be scheduled."""

    def __init__(self, cfg: TileConfig, stats: dict | None = None, fname: str = "main"):
        self.cfg, self.stats, self.fname = cfg, stats, fname

    def apply(self, func, target, tunable):  # pylint: disable=unused-argument
        sch = Schedule(IRModule({"main": func}))
        if root_block(sch) is None:
            return None
        try:
            trial = sch.copy()
            rule_inline(trial, root_block(trial))
            sch = trial
        except Exception:  # pylint: disable=broad-except
            logger.debug("inline failed", exc_info=True)
        names = [sch.get(b).name_hint for b in sch.get_child_blocks(root_block(sch))]
        if len(set(names)) != len(names):
            return None
        for name in names:
            try:
                sch.get_sblock(name)
            except Exception:  # pylint: disable=broad-except
                continue  # inlined into an earlier block's schedule (epilogue)
            trial = sch.copy()
            try:
                kind = self._one(trial, name)
            except Exception as err:  # pylint: disable=broad-except
                logger.debug("cpu: block %s left unscheduled: %s", name, err)
                kind = None
                record_error(self.stats, f"{self.fname}/{name}", err)
            if kind is not None:
                sch = trial
            count(self.stats, kind or "unscheduled")
        return sch

    def _one(self, sch: Schedule, name: str) -> str | None:
        block = sch.get_sblock(name)
        if any(const(sch.get(lp).extent) == 0 for lp in sch.get_loops(block)):
            return "empty"  # zero-trip loop nest (e.g. an empty slice): nothing to schedule
        if is_spatial_block(sch, block):
            return "spatial" if rule_spatial(sch, block, self.cfg) else None
        if rule_contraction(sch, block, self.cfg):
            return "contraction"
        return "reduction" if rule_reduction(sch, block, self.cfg) else None


RULES = {"attention": FusedAttention, "winograd": Winograd, "row_reductions": RowReductions, "blocks": Blocks}


def check(names) -> None:
    """ValueError, naming what is allowed, for a rule list the CPU pipeline cannot build."""
    names = list(names)
    for i, name in enumerate(names):
        if name == RECORDS:
            if i != 0:
                raise ValueError(f"rules: {RECORDS!r} can only come first (MetaScheduleApplyDatabase runs before "
                                 "every rule)")
        elif name not in RULES and not (name.startswith("dlight.") and hasattr(dl.cpu, name[len("dlight."):])):
            raise ValueError(f"rules: unknown rule {name!r}; the CPU rules are {', '.join([RECORDS, *RULES])}, and "
                             "dlight's CPU rules as dlight.<Name> (e.g. dlight.Reduction)")


def make(names, cfg: TileConfig, stats: dict | None = None, fname: str = "main") -> list:
    """The rule objects for `names` (`records` left out: it is a pass)."""
    rules = []
    for name in names:
        if name == RECORDS:
            continue
        if name.startswith("dlight."):
            rules.append(getattr(dl.cpu, name[len("dlight."):])())
        elif name == "blocks":
            rules.append(Blocks(cfg, stats, fname))
        else:
            rules.append(RULES[name](cfg, stats))
    return rules
