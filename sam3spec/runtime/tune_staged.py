"""Tuning for a device that no tracker here can reach (a lent GPU behind a batch queue): MetaSchedule's search
runs here in rounds, each round's candidates built here into libraries (`--stage DIR`), timed where the device
is by :mod:`sam3spec.runtime.staged_timing` (TVM's runtime only), and read back (`--collect DIR`): every timing
goes into the stage's own database, which trains the next round's cost model, and a task's best record is kept
where it beats the rules' schedule timed in the same device run."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from sam3spec.pipelines import intrinsics, records as records_lib
from sam3spec.runtime import measure, tune
from sam3spec.runtime.artifacts import progress
from sam3spec.runtime.staged_timing import STAGE, TIMINGS

MEASURED = "measured"  # the stage's JSON database: every candidate timed so far, all rounds
# how the device times each library: the median of 5 repeats of at least 20 ms (GPU kernels take milliseconds;
# a round of 6 tasks x 64 candidates then fits in minutes of a lent GPU's time)
EVALUATOR = {"number": 5, "repeat": 5, "min_repeat_ms": 20}
CANDIDATES = "candidates"  # per task: a JSON database of the round's built candidates, in file order
UNTIMED = 1e10  # a staged candidate's seconds until the device has timed it


def stage(*, tgt, target: dict, pipeline: str, options: dict, chosen: list[dict], budget: dict,
          directory: Path, component: str) -> dict:
    """Build round r's candidates (r = 1 + the rounds collected) and the rules' schedule of each chosen task
    into `directory`/<task>/ as libraries the device loads with TVM's runtime alone; writes stage.json."""
    from tvm.s_tir import meta_schedule as ms

    measured = records_lib.database(directory / MEASURED, create=True)
    previous = json.loads((directory / STAGE).read_text()) if (directory / STAGE).is_file() else {}
    rounds = previous.get("round", 1) - (0 if previous.get("collected") else 1) if previous else 0  # rounds done
    entry = {"component": component, "target": target, "round": rounds + 1,
             "evaluator": EVALUATOR, "tasks": []}
    for i, task in enumerate(chosen, 1):
        label = f"{component}: task {i}/{len(chosen)} {task['name']}"
        func_mod = task["task"].dispatched[0]
        folder = directory / task["name"]
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        workload = measured.commit_workload(func_mod)
        candidates = _candidates(task, budget, measured, workload, seed=rounds + 1)
        progress(f"{label}: round {rounds + 1}, {len(candidates)} candidates (cost model trained on "
                      f"{len(measured.get_all_tuning_records())} timings); building")
        mods = [tune.rules_schedule(func_mod, tgt, pipeline, options)] + [c.sch.mod for c in candidates]
        files = _build(mods, task["task"].target, folder)
        args = [[str(a.dtype), [int(d) for d in a.shape]] for a in ms.arg_info.ArgInfo.from_prim_func(func_mod["main"])]
        # the built candidates' traces, in the order of their files: line k of the records is candidate k (the
        # database writes what Python's JSON conversion cannot, the index maps of layout transforms)
        kept = records_lib.database(folder / CANDIDATES, create=True)
        kept_workload = kept.commit_workload(func_mod)
        for c, f in zip(candidates, files[1:]):
            if f is not None:
                kept.commit_tuning_record(ms.database.TuningRecord(c.sch.trace, kept_workload, [UNTIMED],
                                                                   task["task"].target, c.args_info))
        del kept
        entry["tasks"].append({
            "name": task["name"], "flops": task["flops"], "calls": task["calls"], "args": args, "rules": files[0],
            "candidates": [{"file": f} for f in files[1:] if f is not None]})
        built = sum(f is not None for f in files[1:])
        progress(f"{label}: {built} of {len(candidates)} candidates built"
                      + ("" if files[0] else "; the rules' schedule did not build"))
    (directory / TIMINGS).unlink(missing_ok=True)
    (directory / STAGE).write_text(json.dumps(entry, indent=1) + "\n")
    return {"stage": str(directory), "round": rounds + 1,
            "candidates": sum(len(t["candidates"]) for t in entry["tasks"])}


def _candidates(task: dict, budget: dict, measured, workload, seed: int) -> list:
    """One round of the evolutionary search: `trials` new candidates, its xgboost cost model first trained on
    every timing of this task the stage holds (none in round 1: then the search's picks are the cost model's
    untrained guesses among random samples)."""
    from tvm.s_tir import Schedule
    from tvm.s_tir import meta_schedule as ms

    ctx = ms.TuneContext(mod=task["task"].dispatched[0], target=task["task"].target, space_generator=tune.space(budget),
                         search_strategy="evolutionary", task_name=task["name"], rand_state=seed,
                         num_threads="physical").clone()
    model = ms.cost_model.XGBModel(num_warmup_samples=0)
    timed = [r for r in measured.get_top_k(workload, 10**6) if r.run_secs]
    if timed:
        cands, results = [], []
        for rec in timed:
            sch = Schedule(workload.mod)
            rec.trace.apply_to_schedule(sch, remove_postproc=False)
            cands.append(ms.MeasureCandidate(sch, rec.args_info))
            results.append(ms.runner.RunnerResult(run_secs=rec.run_secs, error_msg=None))
        model.update(ctx, cands, results)
    ctx.pre_tuning(max_trials=budget["trials"], num_trials_per_iter=budget["trials"],
                   design_spaces=ctx.generate_design_space(), database=measured, cost_model=model)
    out = ctx.generate_measure_candidates() or []
    ctx.post_tuning()
    return list(out)


def _build(mods: list, tgt, folder: Path) -> list[str | None]:
    """Each scheduled module built (MetaSchedule's builder, in parallel) and exported as a shared library in
    `folder`: its file name, or None where it did not build."""
    import os

    from tvm.s_tir import meta_schedule as ms

    workers = max(1, os.cpu_count() or 1)
    built = ms.builder.LocalBuilder(max_workers=workers, timeout_sec=measure.BUILD_TIMEOUT_S, f_build=measure.build,
                                    f_export=measure.export_shared).build(
        [ms.builder.BuilderInput(m, tgt) for m in mods])
    names, errors = [], []
    for i, b in enumerate(built):
        if b.error_msg:
            names.append(None)
            errors.append(measure.last_line(b.error_msg))
            continue
        name = "rules.so" if i == 0 else f"c{i - 1:03d}.so"
        shutil.move(b.artifact_path, folder / name)
        shutil.rmtree(Path(b.artifact_path).parent, ignore_errors=True)
        names.append(name)
    if errors:
        progress(f"{folder.name}: {len(errors)} did not build, the first: {errors[0]}")
    return names


def collect(*, directory: Path, records: str, keep_slower: bool = False) -> dict:
    """Read the device's timings back: every candidate's into the stage database, and per task the best one kept
    in `records` where it ran faster than the rules' schedule in the same device run."""
    from tvm.s_tir import meta_schedule as ms

    staged = json.loads((directory / STAGE).read_text())
    if any(task["candidates"] for task in staged["tasks"]):
        intrinsics.register()  # tensorized candidates name their intrinsics
    timings = json.loads((directory / TIMINGS).read_text())
    measured = records_lib.database(directory / MEASURED, create=True)
    tasks, tuned = [], []
    for task in staged["tasks"]:
        got = timings.get(task["name"], {})
        staged_db = directory / task["name"] / CANDIDATES
        lines = (staged_db / records_lib.RECORDS).read_text().splitlines() if task["candidates"] else []
        workload_line = (staged_db / records_lib.WORKLOADS).read_text().splitlines()[0]
        workload = measured.commit_workload(ms.database.Workload.from_json(json.loads(workload_line)).mod)
        rules_secs = (got.get(task["rules"]) or {}).get("secs") if task["rules"] else None
        best, best_secs, ran = None, None, 0
        for cand, line in zip(task["candidates"], lines):
            secs = (got.get(cand["file"]) or {}).get("secs")
            if secs is None:
                continue
            rec = ms.database.TuningRecord.from_json(json.loads(line)[1], workload)
            ran += 1
            rec = ms.database.TuningRecord(rec.trace, workload, [secs], rec.target, rec.args_info)
            measured.commit_tuning_record(rec)
            if best_secs is None or secs < best_secs:
                best, best_secs = rec, secs
        # the best of every round so far: a later round's batch may hold nothing faster than an earlier one's
        top = measured.get_top_k(workload, 1)
        if top and top[0].run_secs and (best_secs is None or float(top[0].run_secs[0]) < best_secs):
            best, best_secs = top[0], float(top[0].run_secs[0])
        kept = best is not None and (keep_slower or (rules_secs is not None and best_secs < rules_secs))
        tuned.append((workload.mod, best if kept else None))
        tasks.append({"name": task["name"], "flops": task["flops"], "calls": task["calls"],
                      "rules_ms": tune.ms_value(rules_secs), "tuned_ms": tune.ms_value(best_secs),
                      "candidates_ran": ran, "candidates": len(task["candidates"]), "kept": kept})
        progress(f"{staged['component']}: {task['name']}: {ran} of {len(task['candidates'])} candidates ran; "
                      f"rules {tune.ms_text(rules_secs)}, best {tune.ms_text(best_secs)}: "
                      + ("record kept" if kept else "the rules stay"))
    tune.merge(Path(records), tuned)
    (directory / STAGE).write_text(json.dumps({**staged, "collected": True}, indent=1) + "\n")
    return {"round": staged["round"], "tasks": tasks,
            "records": {"directory": records, "kept": sum(t["kept"] for t in tasks)}}
