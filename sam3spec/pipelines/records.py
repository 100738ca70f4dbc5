"""Tuned schedules kept as data: a MetaSchedule JSON database per component and target (``tuning/``), applied
before the hand rules and dlight, which schedule every function the records do not have (TVM PR #19385's
order: after FuseOps/FuseTIR, the rules as the fallback)."""

from __future__ import annotations

from pathlib import Path

import tvm
from tvm import relax, tirx

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
SCHEDULED = "tirx.is_scheduled"


def database(directory: str | Path, create: bool = False):
    """The JSON database in `directory`; None where there is none and `create` is False."""
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    directory = Path(directory)
    if not create and not (directory / WORKLOADS).is_file():
        return None
    records = directory / RECORDS
    if records.is_file() and b'"Tensorize"' in records.read_bytes():
        # a tensorized record names its intrinsics (wmma_*): reading it back needs them registered
        from sam3spec.pipelines import intrinsics  # pylint: disable=import-outside-toplevel

        intrinsics.register()
    directory.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(path_workload=str(directory / WORKLOADS),
                                    path_tuning_record=str(directory / RECORDS), allow_missing=create)


def scheduled(func) -> bool:
    return isinstance(func, tirx.PrimFunc) and func.attrs is not None and bool(func.attrs.get(SCHEDULED, False))


def apply(directory: str | None, stats: dict | None = None) -> list:
    """The passes that give each PrimFunc its tuned schedule from `directory` (none without a database);
    ``stats["from_records"]`` counts the functions that took one."""
    if directory is None:
        return []

    @tvm.transform.module_pass(opt_level=0, name="sam3spec.ApplyRecords")
    def _apply(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        db = database(directory)
        if db is None:
            return mod
        before = sum(scheduled(f) for _, f in mod.functions_items())
        with db:
            mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
        if stats is not None:
            stats["from_records"] = sum(scheduled(f) for _, f in mod.functions_items()) - before
        return mod

    return [_apply]
