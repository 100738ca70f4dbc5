"""Step 5: gather each component's step results into build/<manifest>/<target>/report.json and report.md."""

from __future__ import annotations

import json
from pathlib import Path

from sam3spec.plan import STEPS, Plan
from sam3spec.runtime.artifacts import atomic_path, write_json


def entry(component: str, directory: Path) -> dict:
    """One component's report entry: status is `verified`, `<step> failed: <error>` for the first failure,
    or `compiled (verify skipped: <why>)` where the target's device is not on this machine."""
    steps, status, failed = {}, "verified", False
    for name in STEPS:
        path = directory / f"{name}.json"
        if not path.is_file():
            if status == "verified":
                status, failed = f"{name} not run", True
            continue
        result = json.loads(path.read_text())
        steps[name] = result
        if result["status"] == "skipped" and status == "verified":
            status = f"compiled ({name} skipped: {result.get('reason', '')})"
        elif result["status"] != "ok" and status == "verified":
            status, failed = f"{name} failed: {result.get('error', result['status'])}", True
    verify = steps.get("verify", {})
    return {
        "name": component,
        "status": status,
        "failed": failed,
        "seconds": {name: steps[name]["seconds"] for name in steps if "seconds" in steps[name]},
        "outputs": [{k: o.get(k) for k in ("name", "max_abs", "max_rel", "atol", "rtol", "ok")}
                    for o in verify.get("outputs", [])],
        "export": {k: steps.get("export", {}).get(k) for k in
                   ("substitutions", "exported_vs_original_max_abs")},
    }


def markdown(report: dict) -> str:
    lines = [f"# {report['manifest']} on {report['target']}", "",
             f"{report['verified']} of {len(report['components'])} components verified.", "",
             "| component | status | output | max abs | max rel | atol | rtol | export s | compile s | verify s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in report["components"]:
        secs = [f"{c['seconds'][s]:.1f}" if s in c["seconds"] else "" for s in STEPS]
        outs = c["outputs"] or [{"name": "", "max_abs": None, "max_rel": None, "atol": None, "rtol": None}]
        for i, o in enumerate(outs):
            num = [f"{o[k]:.2e}" if o[k] is not None else "" for k in ("max_abs", "max_rel")]
            tol = [f"{o[k]:g}" if o[k] is not None else "" for k in ("atol", "rtol")]
            status = c["status"].replace("|", "\\|").replace("\n", " ")[:200] if i == 0 else ""
            lines.append(f"| {c['name'] if i == 0 else ''} | {status} | {o['name']} | {' | '.join(num)} | "
                         f"{' | '.join(tol)} | {' | '.join(secs if i == 0 else ['', '', ''])} |")
    return "\n".join(lines) + "\n"


def write(plan: Plan, root: Path, target: str, components: list[str]) -> dict:
    build = plan.build_dir(root, target)
    report = {"manifest": plan.name, "target": target,
              "components": [entry(name, build / name) for name in components]}
    report["verified"] = sum(c["status"] == "verified" for c in report["components"])
    report["failed"] = sum(c["failed"] for c in report["components"])
    write_json(build / "report.json", report)
    with atomic_path(build / "report.md") as tmp:
        tmp.write_text(markdown(report))
    return report
