"""`tune`: per component, export (or reuse the cached export), then the generated tune script: MetaSchedule on the
component's heaviest tasks, measured here or on devices a TVM RPC tracker holds; records into tuning/."""

from __future__ import annotations

import json
from pathlib import Path

from sam3spec import port, render
from sam3spec.plan import Plan
from sam3spec.runtime.artifacts import read_result
from sam3spec.runtime.staged_timing import STAGE, TIMINGS


def tracker_problem(address: str, key: str | None) -> str | None:
    """Why HOST:PORT is no TVM RPC tracker holding a server under `key` (None when it is), checked first."""
    from tvm import rpc

    from sam3spec.runtime.verify import endpoint_problem

    if not key:
        return "needs a device key (--key, or tuning.tracker.key in the manifest)"
    problem, summary = endpoint_problem(address, "tracker",
                                        lambda host, port: rpc.connect_tracker(host, port).summary(),
                                        "a `python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190` there")
    if problem:
        return problem
    servers = summary.get("queue_info", {})
    if key not in servers:
        return (f"the tracker holds no server under key {key!r} (it has: {', '.join(servers) or 'none'}); start "
                f"`python -m tvm.exec.rpc_server --tracker {address} --key {key}` on the device")
    return None


def script_arguments(args, address: str | None, key: str | None) -> list[str]:
    """The command line's choices as the generated tune script's options."""
    out = [*(["--tasks", str(args.tasks)] if args.tasks else []), *(["--trials", str(args.trials)] if args.trials else [])]
    out += ["--tracker", address, "--key", key] if address else []
    out += ["--keep-slower"] if args.keep_slower else []
    return out + [a for name in args.task for a in ("--task", name)]


def summary(results: dict[str, dict]) -> list[str]:
    """One line per component: how many tuned tasks beat the rules, how many records were kept."""
    lines = []
    for name, result in results.items():
        tasks = result.get("tasks", [])
        beat = sum(t["tuned_ms"] is not None and (t["rules_ms"] is None or t["tuned_ms"] < t["rules_ms"])
                   for t in tasks)
        lines.append(f"{name}: {result.get('status')}"
                     + (f", {beat} of {len(tasks)} tuned tasks beat the rules, {sum(t['kept'] for t in tasks)} "
                        "records kept" if tasks else "")
                     + (f": {result['error']}" if result.get("error") else ""))
    return lines


def collect_problem(directory: Path, names: list[str]) -> str | None:
    """Why `directory` holds no timed stage for one of the components (None when all have one)."""
    for name in names:
        if not (directory / name / STAGE).is_file():
            return f"no stage of {name} there (build one with --stage {directory})"
        if json.loads((directory / name / STAGE).read_text()).get("collected"):
            return (f"{name}'s round there is collected already (its timings are in the stage's database): "
                    f"build the next round with --stage {directory}")
        if not (directory / name / TIMINGS).is_file():
            return (f"{name}'s stage has not been timed: run `python -m sam3spec.runtime.staged_timing "
                    f"{directory / name}` where the device is, and copy its {TIMINGS} back")
    return None


def run(plan: Plan, root: Path, target: str, names: list[str], extra: list[str],
        records_root: Path | None = None, stages: dict[str, Path] | None = None) -> dict[str, dict]:
    """Export where needed, then tune each component (records under `records_root`/<component> instead of
    tuning/ where given; `stages` {"--stage" or "--collect": DIR}: that step of the staged tuning, in
    DIR/<component>); returns component -> its tune.json."""
    touched = render.write(render.render(plan, root), root / "generated", [plan.name])
    print(f"generate: {len(touched)} file(s) changed", flush=True)
    results = {}
    for i, name in enumerate(names, 1):
        print(f"\n=== [{i}/{len(names)}] tune {name} → {target} ===", flush=True)
        out = plan.build_dir(root, target) / name
        port.component(plan, root, name, target, ("export",))
        if (read_result(out, "export") or {}).get("status") != "ok":
            results[name] = {"status": "failed", "error": "the export failed (see above)"}
            continue
        (out / "tune.json").unlink(missing_ok=True)
        script = plan.generated_dir(root) / name / f"tune_{target}.py"
        where = ["--records", str(records_root / name)] if records_root else []
        where += [a for flag, d in (stages or {}).items() for a in (flag, str(d / name))]
        port.run_script(root, script, out / "tune.json", *extra, *where)
        results[name] = read_result(out, "tune") or {"status": "failed"}
    return results
