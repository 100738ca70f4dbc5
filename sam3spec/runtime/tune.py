"""Tune one component's heaviest kernels with MetaSchedule (xgboost cost model, evolutionary search) and keep
each tuned schedule that beats the pipeline's own rules, measured the same way, in the component's records
(tuning/<manifest>/<target>/<component>/). The tasks come from the Relax module the compile step builds, at
the point where its schedule step runs; the records hold only the tuned workloads, so re-tuning one task
changes only its lines."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from sam3spec.pipelines import intrinsics, records as records_lib
from sam3spec.runtime import measure
from sam3spec.runtime.artifacts import progress, step
from sam3spec.runtime.compile import import_program, tvm_target
from sam3spec.runtime.resolve import resolve


def extract(mod, tgt, pipeline, options: dict, dynamic: bool, search_target=None) -> list[dict]:
    """Every PrimFunc the schedule step gets, heaviest first (FLOPs per call x calls): name, flops, calls, task
    (whose target, `search_target` where given, is the one MetaSchedule searches and builds for)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops

    staged = resolve(pipeline)(tgt, dynamic_shapes=dynamic, stop_before_schedule=True, **options)(mod)
    found = []
    for task in ms.relax_integration.extract_tasks(staged, search_target or tgt):
        func_mod = task.dispatched[0]
        if not static(func_mod["main"]):
            continue  # MetaSchedule measures static shapes only: a dynamic dim's kernels keep the rules
        try:
            flops = float(estimate_tir_flops(func_mod))
        except Exception:  # noqa: BLE001 - symbolic extents: no count
            flops = 0.0
        found.append({"name": task.task_name, "flops": flops, "calls": int(task.weight), "task": task})
    return sorted(found, key=lambda t: -t["flops"] * t["calls"])


def static(func) -> bool:
    """Whether every buffer of `func` has a constant shape (MetaSchedule's argument info refuses others)."""
    from tvm.s_tir import meta_schedule as ms

    try:
        ms.arg_info.ArgInfo.from_prim_func(func)
    except (TypeError, ValueError):
        return False
    return True


def rules_schedule(func_mod, tgt, pipeline, options: dict):
    """The task as the pipeline's own rules schedule it (what compile does without a record)."""
    import tvm

    staged = tvm.IRModule({"main": func_mod["main"]})
    return resolve(pipeline)(tgt, schedule_only=True, **options)(staged)


def _progress_callback(label: str, flops: float, trials: int):
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class _Progress(ms.measure_callback.PyMeasureCallback):
        def __init__(self):
            super().__init__()
            self.done, self.best = 0, None

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            for res in runner_results:
                self.done += 1
                if res.error_msg is None and res.run_secs:
                    secs = measure.mean_secs(res.run_secs)
                    self.best = secs if self.best is None else min(self.best, secs)
            best = f"best {flops / self.best / 1e9:.1f} GFLOP/s ({self.best * 1e3:.3f} ms)" if self.best else "no valid candidate yet"
            progress(f"{label}: {self.done}/{trials} trials, {best}")

    return _Progress()


def space(budget: dict):
    """MetaSchedule's design space: its default rules for the target, its named rule set (`space`: cuda-tensorcore,
    the tensor-core tiling with its postprocessors and mutators), or one of :mod:`sam3spec.runtime.spaces`."""
    from tvm.s_tir import meta_schedule as ms

    from sam3spec.runtime.spaces import SPACES

    kind = budget.get("space", "default")
    if kind == "default":
        return "post-order-apply"
    if kind in SPACES:
        return SPACES[kind]()
    intrinsics.register()  # the intrinsics the tensor-core rules tile with

    return ms.space_generator.PostOrderApply(sch_rules=kind, postprocs=kind, mutator_probs=kind)


def tune_one(task: dict, tgt, runner, trials: int, per_iteration: int, label: str, work_dir: str, budget: dict):
    """MetaSchedule's best record for one task, and its seconds per call (None where no candidate ran)."""
    from tvm.s_tir import meta_schedule as ms

    ctx = ms.relax_integration.extracted_tasks_to_tune_contexts([task["task"]], work_dir, space=space(budget),
                                                                 seed=0)[0]
    db = ms.tune.tune_tasks(
        tasks=ctx[:1], task_weights=[1.0], work_dir=work_dir, max_trials_global=trials,
        num_trials_per_iter=min(per_iteration, trials), builder=measure.builder(ctx[0].num_threads), runner=runner,
        cost_model="xgb",
        measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                           _progress_callback(label, task["flops"], trials)])
    func_mod = task["task"].dispatched[0]
    top = db.get_top_k(db.commit_workload(func_mod), 1)
    if not top:
        return None, None
    return top[0], measure.mean_secs(top[0].run_secs)


def merge(directory: Path, tuned: list) -> None:
    """Write the records: the existing ones, except workloads tuned now, whose new best record (if any) takes
    their place; workloads stay in the order of the file, new ones after, so a re-tuned task changes only its own
    lines. Files replaced whole, so an interrupted run leaves the old records."""
    import json

    import tvm_ffi

    old = records_lib.database(directory)
    keep = []
    if old is not None:
        keep = [r for r in old.get_all_tuning_records()
                if not any(tvm_ffi.structural_equal(r.workload.mod, m) for m, _ in tuned)]
    records = keep + [r for _, r in tuned if r is not None]
    lines = (directory / records_lib.WORKLOADS).read_text().splitlines() if old is not None else []
    order = {json.loads(line)[0]: i for i, line in enumerate(lines)}  # a line: [structural hash, module]
    # the database hands its records out by run time: sorted back into the file's order (stable: new ones after)
    records.sort(key=lambda r: order.get(str(tvm_ffi.structural_hash(r.workload.mod) % 2**64), len(order)))
    if not records:  # nothing beat the rules and nothing else is kept: no files
        for name in (records_lib.WORKLOADS, records_lib.RECORDS):
            (directory / name).unlink(missing_ok=True)
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory.parent, prefix=f".{directory.name}.") as tmp:
        new = records_lib.database(tmp, create=True)
        for rec in records:
            new.commit_tuning_record(rec.__class__(rec.trace, new.commit_workload(rec.workload.mod), rec.run_secs,
                                                   rec.target, rec.args_info))
        del new
        directory.mkdir(exist_ok=True)
        for name in (records_lib.WORKLOADS, records_lib.RECORDS):
            Path(tmp, name).replace(directory / name)


def run(*, component: str, target: dict, pipeline: str, converters: dict[str, str], dynamic: bool, out_dir: str,
        records: str, budget: dict, pipeline_options: dict | None = None, pass_config: dict | None = None,
        offline: dict | None = None) -> None:
    """Tune `budget["tasks"]` tasks of the component exported in `out_dir` (its tune.json says what happened).
    `offline` {"stage": DIR} builds one search round's candidates into DIR for a device to time, {"collect": DIR}
    reads its timings back (:mod:`sam3spec.runtime.tune_staged`)."""
    import tvm

    from sam3spec.runtime import tune_staged

    out = Path(out_dir)
    options = dict(pipeline_options or {})
    with step(out, "tune") as result, tvm.transform.PassContext(config=dict(pass_config or {})):
        if (offline or {}).get("collect"):
            result.update(tune_staged.collect(directory=Path(offline["collect"]), records=records,
                                              keep_slower=budget.get("keep") == "all"))
            return
        mod, _, _ = import_program(out, component, converters)
        tgt = tvm_target(target)
        # the device limits MetaSchedule checks candidates against (CUDA: threads per block, shared memory),
        # which compile's own target leaves to the rules' defaults
        search = tvm_target({**target, **budget["target"]}) if budget.get("target") else tgt
        tasks = [t for t in extract(mod, tgt, pipeline, options, dynamic, search)
                 if t["flops"] >= budget.get("min_flops", 0)]
        if budget.get("only"):  # --task NAME: these tasks, whatever their rank
            unknown = sorted(set(budget["only"]) - {t["name"] for t in tasks})
            if unknown:
                raise ValueError(f"no task {', '.join(unknown)} in {component} (its tasks, heaviest first: "
                                 f"{', '.join(t['name'] for t in tasks[:12])}{', ...' if len(tasks) > 12 else ''})")
            chosen = [t for t in tasks if t["name"] in budget["only"]]
        else:
            chosen = tasks[:budget["tasks"]]
        total = sum(t["flops"] * t["calls"] for t in tasks) or 1.0
        progress(f"{component}: {len(tasks)} tasks; tuning {len(chosen)}, "
                 f"{100 * sum(t['flops'] * t['calls'] for t in chosen) / total:.0f}% of its FLOPs")
        if (offline or {}).get("stage"):
            result.update(tune_staged.stage(tgt=tgt, target=target, pipeline=pipeline, options=options, chosen=chosen,
                                            budget=budget, directory=Path(offline["stage"]), component=component))
            return
        result["tracker"] = budget.get("tracker")
        result["tasks"], tuned = [], []
        for i, task in enumerate(chosen, 1):
            label = f"{component}: task {i}/{len(chosen)} {task['name']}"
            started = time.monotonic()
            func_mod = task["task"].dispatched[0]
            rules_mod = rules_schedule(func_mod, tgt, pipeline, options)
            rules_secs, why = measure.seconds(rules_mod, tgt, measure.runner(budget.get("tracker")))
            if why:
                progress(f"{label}: the rules' schedule did not run ({why})")
            else:
                progress(f"{label}: the rules take {ms_text(rules_secs)} ({task['flops'] / rules_secs / 1e9:.1f} GFLOP/s); "
                         f"tuning, {budget['trials']} trials")
            runner = measure.runner(budget.get("tracker"), measure.candidate_timeout(rules_secs))
            with tempfile.TemporaryDirectory(prefix="sam3spec-tune-") as work:
                record, secs = tune_one(task, search, runner, budget["trials"], budget.get("per_iteration", 16),
                                        label, work, budget)
            search_secs = secs
            if record is not None and rules_secs is not None:  # the decision: both again, side by side
                (rules_secs, _), (secs, _) = measure.timed(
                    [rules_mod, applied(record, func_mod)], tgt,
                    measure.runner(budget.get("tracker"), evaluator=measure.FINAL))
            kept = secs is not None and (rules_secs is None or secs < rules_secs or budget.get("keep") == "all")
            tuned.append((func_mod, record if kept else None))
            entry = {"name": task["name"], "flops": task["flops"], "calls": task["calls"],
                     "rules_ms": ms_value(rules_secs), "tuned_ms": ms_value(secs),
                     "search_best_ms": ms_value(search_secs), "kept": kept,
                     "seconds": round(time.monotonic() - started, 1)}
            result["tasks"].append(entry)
            progress(f"{label}: side by side, rules {ms_text(rules_secs)}, tuned {ms_text(secs)} "
                     f"(search best {ms_text(search_secs)}): " + ("record kept" if kept else "the rules stay"))
        merge(Path(records), tuned)
        result["records"] = {"directory": records, "kept": sum(t["kept"] for t in result["tasks"])}


def add_budget_arguments(parser) -> None:
    """The generated tune script's options: they override the manifest's budget for one run."""
    parser.add_argument("--tasks", type=int, help="tune this many tasks, the heaviest first")
    parser.add_argument("--task", action="append", default=[], metavar="NAME",
                        help="tune this task (repeatable; its name as tune.json gives it) instead of the heaviest")
    parser.add_argument("--trials", type=int, help="measured candidates per task")
    parser.add_argument("--tracker", metavar="HOST:PORT", help="a TVM RPC tracker (python -m tvm.exec.rpc_tracker)")
    parser.add_argument("--key", help="the device key its servers registered with")
    parser.add_argument("--records", metavar="DIR", help="write the records here instead of tuning/")
    parser.add_argument("--stage", metavar="DIR", help="build one search round's candidates into DIR (no timing)")
    parser.add_argument("--collect", metavar="DIR", help="read DIR's device timings back into the records")
    parser.add_argument("--keep-slower", action="store_true",
                        help="keep MetaSchedule's best even where the rules measured faster")


def budget(base: dict, args) -> dict:
    """The manifest's budget with the command line's overrides."""
    out = dict(base)
    out.update({k: getattr(args, k) for k in ("tasks", "trials") if getattr(args, k) is not None})
    tracker = dict(base.get("tracker") or {})
    if args.tracker:
        tracker["address"] = args.tracker
    if args.key:
        tracker["key"] = args.key
    if tracker:
        out["tracker"] = tracker
    if args.keep_slower:
        out["keep"] = "all"
    if args.task:
        out["only"] = list(args.task)
    return out


def offline(args) -> dict | None:
    """--stage DIR or --collect DIR: the staged tuning's step (None: search and time here or on the tracker)."""
    return {"stage": args.stage} if args.stage else {"collect": args.collect} if args.collect else None


def applied(record, func_mod):
    """The task's module with a record's schedule (its trace replayed, postprocessors included)."""
    from tvm.s_tir import Schedule

    sch = Schedule(func_mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    return sch.mod


def ms_value(secs: float | None) -> float | None:
    return None if secs is None else secs * 1e3


def ms_text(secs: float | None) -> str:
    return "failed" if secs is None else f"{secs * 1e3:.3f} ms"
