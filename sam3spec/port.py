"""`port`: generate, then per component export → compile → verify, each step a generated script in its own
process, unless the step cache (cache.py) holds its result for exactly the same ingredients (stepkeys.py).
Every step says on the console whether it is `cached` or why it runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sam3spec import cache, render, stepkeys
from sam3spec.plan import STEPS, ComponentPlan, Plan
from sam3spec.runtime import reference
from sam3spec.runtime.artifacts import read_result, remove_temporaries, write_json
from sam3spec.runtime.loader import LIBRARY_FILE



def reads(step: str, target_kind: str) -> tuple[str, ...]:
    """The files of earlier steps that `step` loads."""
    return {"compile": ("program.pt2",), "reference": ("params.json",),
            "verify": (LIBRARY_FILE[target_kind], "params.bin", reference.FILE)}.get(step, ())


def rpc_problem(address: str) -> str | None:
    """Why HOST:PORT is no TVM RPC server we can reach (None when it answers), checked before any step runs."""
    from tvm import rpc

    from sam3spec.runtime.verify import endpoint_problem

    return endpoint_problem(address, "server", lambda host, port: rpc.connect(host, port, session_timeout=30),
                            "a `python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090` there",
                            "start `python -m tvm.exec.rpc_server --host 0.0.0.0 --port {port}` on that machine")[0]


def run_script(root: Path, script: Path, result: Path, *extra: str) -> bool:
    """Runs one generated script in its own process, its output shown as it comes. A process that dies
    without writing its result (a crash in native code) gets one written for it. A GPU stays visible to export
    and reference: the model builds on the CPU (export.cpu_build) and the reference is a CPU run, and PyTorch
    autocast for a reduced-precision rule runs on the target's GPU."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    code = subprocess.run([sys.executable, str(script), *extra], env=env, cwd=root).returncode
    if code != 0 and not result.is_file():
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        write_json(result, {"step": result.stem, "status": "failed", "error": f"process {how} before writing a result"})
    return code == 0


def _say(line: str) -> None:
    """One whole line in one write: with --jobs, lines from several components' threads stay whole."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def verify_only_steps(out: Path) -> tuple[str, ...]:
    """--verify-only: verify the library compiled elsewhere; first rebuild its weights and PyTorch reference from
    the seed (no torch.export, no TVM compiler) where build/ came without them (they are large)."""
    have = (out / "params.bin").is_file() and (out / reference.FILE).is_file()
    return ("verify",) if have else ("reference", "verify")


def ingredients(plan: Plan, root: Path, comp: ComponentPlan, target: str, step: str, out: Path,
                rpc: str | None) -> dict[str, str]:
    if step == "export":
        return stepkeys.for_export(plan, root, comp, target=target)
    if step == "compile":
        return stepkeys.for_compile(plan, root, comp, target, read_result(out, "export") or {})
    if step == "reference":
        return stepkeys.for_reference(plan, root, comp, read_result(out, "compile") or {}, target)
    return stepkeys.for_verify(plan, root, comp, target, out, rpc)


def _script(plan: Plan, root: Path, name: str, step: str, target: str) -> Path:
    return plan.generated_dir(root) / name / (f"{step}_{target}.py" if step in ("compile", "verify") else "export.py")


def component(plan: Plan, root: Path, name: str, target: str, steps: tuple[str, ...], *, rpc: str | None = None,
              force: bool = False, dry_run: bool = False) -> dict[str, str]:
    """Run (or reuse) `steps` of one component; returns step -> `cached` or why it ran (steps after a failure
    are absent). dry_run: only say what would run; a step after one that would run shows that dependency."""
    out = plan.build_dir(root, target) / name
    comp, decided, upstream = plan.component(name), {}, None
    if not dry_run:
        remove_temporaries(out)
    for step in steps:
        needs = ingredients(plan, root, comp, target, step, out, rpc)
        why = cache.decide(out, step, needs, force, reads(step, plan.targets[target]["target"]["kind"]))
        if dry_run and upstream and why == cache.CACHED:
            why = f"after {upstream}, if its result changes"
        decided[step] = why
        _say(f"{name}: {step}: {why if why == cache.CACHED else 'runs: ' + why}")
        if why == cache.CACHED:
            continue
        upstream = upstream or step
        if dry_run:
            continue
        (out / f"{step}.json").unlink(missing_ok=True)  # no result from the last run survives a new one
        if step in ("export", "compile") and "reference" not in steps:
            (out / "reference.json").unlink(missing_ok=True)  # a rebuild from another machine's library
        extra = {"export": ["--target", target], "reference": ["--target", target, "--reference-only"],
                 "verify": ["--rpc", rpc] if rpc else []}.get(step, [])
        if not run_script(root, _script(plan, root, name, step, target), out / f"{step}.json", *extra):
            break
        cache.seal(out, step, needs, why)
    return decided


def jobs_default() -> int:
    """Components ported at once when --jobs is not given: $SAM3SPEC_JOBS, else 1; ValueError if it is set to
    anything but a whole number of at least 1."""
    value = os.environ.get("SAM3SPEC_JOBS", "1").strip()
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"$SAM3SPEC_JOBS={value!r}: need a whole number of at least 1 (components ported at once)")
    return int(value)


def run(plan: Plan, root: Path, target: str, names: list[str], *, rpc: str | None = None, verify_only: bool = False,
        force: bool = False, dry_run: bool = False, jobs: int = 1) -> dict[str, dict[str, str]]:
    """Generate (unless dry_run), then each component's steps, `jobs` components at once (each step is its own
    process; their output lines interleave); returns component -> step -> decision, in the order of `names`."""
    from concurrent.futures import ThreadPoolExecutor

    if not dry_run:
        touched = render.write(render.render(plan, root), root / "generated", [plan.name])
        print(f"generate: {len(touched)} file(s) changed", flush=True)

    def one(i: int, name: str) -> dict[str, str]:
        _say(f"\n=== [{i}/{len(names)}] {name} → {target} ===")
        out = plan.build_dir(root, target) / name
        steps = verify_only_steps(out) if verify_only else STEPS
        return component(plan, root, name, target, steps, rpc=rpc, force=force, dry_run=dry_run)

    numbered = list(enumerate(names, 1))
    if jobs <= 1 or dry_run or len(names) < 2:
        return {name: one(i, name) for i, name in numbered}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        decided = list(pool.map(lambda item: one(*item), numbered))
    return dict(zip(names, decided))
