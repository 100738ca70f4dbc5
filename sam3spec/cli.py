"""The command line: validate, generate, port, bench, report. One function per command, each a few steps of the
pipeline: manifest (load + validate) → plan → render → run → report."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from sam3spec import manifest as manifest_lib, plan as plan_lib, render, report as report_lib
from sam3spec.plan import STEPS
from sam3spec.runtime.artifacts import write_json

DEFAULT_MANIFEST = "manifests/sam3-image.yaml"
EXIT_INVALID = 2


def _root() -> Path:
    return Path.cwd()


def _load_all(paths: list[str]) -> list[manifest_lib.Manifest] | None:
    """Load and validate; prints every error as FILE:LINE:COL: key.path: message and returns None on any."""
    loaded, failed = [], False
    for path in paths:
        try:
            loaded.append(manifest_lib.load(path))
        except manifest_lib.ManifestErrors as exc:
            failed = True
            for error in exc.errors:
                print(error, file=sys.stderr)
    return None if failed else loaded


def _manifest_paths(given: list[str]) -> list[str]:
    return given or sorted(os.path.relpath(p, _root()) for p in (_root() / "manifests").glob("*.yaml"))


def cmd_validate(args) -> int:
    sys.dont_write_bytecode = True  # validation writes nothing, not even __pycache__
    paths = _manifest_paths(args.paths)
    if _load_all(paths) is None:
        return EXIT_INVALID
    print(f"{len(paths)} manifest(s) valid: {', '.join(paths)}")
    return 0


def _render_all(paths: list[str]) -> tuple[dict, list[str]] | None:
    manifests = _load_all(paths)
    if manifests is None:
        return None
    files, names = {}, []
    for m in manifests:
        plan = plan_lib.make(m, _root())
        files.update(render.render(plan, _root()))
        names.append(plan.name)
    return files, names


def cmd_generate(args) -> int:
    rendered = _render_all(_manifest_paths(args.paths))
    if rendered is None:
        return EXIT_INVALID
    files, names = rendered
    generated = _root() / "generated"
    if args.check:
        stale = render.differences(files, generated, names)
        for path in stale:
            print(f"out of date: {os.path.relpath(path, _root())}", file=sys.stderr)
        if stale:
            print("generated/ differs from manifests/ and templates/: run `python -m sam3spec generate`",
                  file=sys.stderr)
            return 1
        print(f"generated/ is up to date ({len(files)} files)")
        return 0
    touched = render.write(files, generated, names)
    print(f"generated {len(files)} files, {len(touched)} changed")
    for path in touched:
        print(f"  {os.path.relpath(path, _root())}")
    return 0


def _run_script(script: Path, result: Path, *extra: str) -> bool:
    """Runs one generated script in its own process, its output shown as it comes. A process that dies
    without writing its result (a crash in native code) gets one written for it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(_root()), os.environ.get("PYTHONPATH")])))
    code = subprocess.run([sys.executable, str(script), *extra], env=env, cwd=_root()).returncode
    if code != 0 and not result.is_file():
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        write_json(result, {"step": result.stem, "status": "failed", "error": f"process {how} before writing a result"})
    return code == 0


def _components(plan: plan_lib.Plan, args) -> list[str] | None:
    """The components `args` names (--component, default all) that have `args.target`; None (and a message)
    for an unknown target or component."""
    if args.target not in plan.targets:
        print(f"{args.manifest}: no target {args.target!r} (has: {', '.join(plan.targets)})", file=sys.stderr)
        return None
    names = [c.name for c in plan.components if args.target in c.targets]
    unknown = [n for n in args.component if n not in names]
    if unknown:
        print(f"unknown component(s) for {args.target}: {', '.join(unknown)} (has: {', '.join(names)})",
              file=sys.stderr)
        return None
    return args.component or names


def cmd_port(args) -> int:
    manifests = _load_all([args.manifest])
    if manifests is None:
        return EXIT_INVALID
    plan = plan_lib.make(manifests[0], _root())
    names = _components(plan, args)
    if names is None:
        return EXIT_INVALID
    touched = render.write(render.render(plan, _root()), _root() / "generated", [plan.name])
    print(f"generate: {len(touched)} file(s) changed", flush=True)
    scripts = plan.generated_dir(_root())
    for i, name in enumerate(names, 1):
        print(f"\n=== [{i}/{len(names)}] {name} → {args.target} ===", flush=True)
        out = plan.build_dir(_root(), args.target) / name
        for step in STEPS:
            (out / f"{step}.json").unlink(missing_ok=True)
        for step in STEPS:
            script = scripts / name / ("export.py" if step == "export" else f"{step}_{args.target}.py")
            extra = ["--target", args.target] if step == "export" else []
            if not _run_script(script, out / f"{step}.json", *extra):
                break
    report = report_lib.write(plan, _root(), args.target, names)
    md = plan.build_dir(_root(), args.target) / "report.md"
    print("\n" + md.read_text())
    print(f"report: {os.path.relpath(md, _root())} and report.json")
    return 1 if report["failed"] else 0


def _cpu_name() -> str:
    import platform

    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical CPUs"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"


def _compiled(directory: Path) -> bool:
    path = directory / "compile.json"
    return path.is_file() and json.loads(path.read_text()).get("status") == "ok"


def cmd_bench(args) -> int:
    manifests = _load_all([args.manifest])
    if manifests is None:
        return EXIT_INVALID
    plan = plan_lib.make(manifests[0], _root())
    names = _components(plan, args)
    if names is None:
        return EXIT_INVALID
    target = plan.targets[args.target]["target"]
    if target["kind"] != "llvm":
        print(f"{args.manifest}: bench runs on a cpu (llvm) target; {args.target!r} is not one", file=sys.stderr)
        return EXIT_INVALID
    comps = [plan.component(name) for name in names]
    build = plan.build_dir(_root(), args.target)
    missing = [c.name for c in comps if not _compiled(build / c.name)]
    if missing and args.build:
        print(f"bench: porting {', '.join(missing)} first", flush=True)
        cmd_port(argparse.Namespace(manifest=args.manifest, target=args.target, component=missing))
        missing = [name for name in missing if not _compiled(build / name)]
    if missing:
        print(f"not compiled for {args.target}: {', '.join(missing)}; build them with "
              f"`python -m sam3spec port {args.manifest} --target {args.target}` (or nox -s port-cpu)", file=sys.stderr)
        return EXIT_INVALID
    import torch

    from sam3spec.runtime import bench

    results = bench.run(model=plan.model, manifest_dir=str(_root() / plan.manifest_dir),
                        components=[{"name": c.name, "adapter": c.adapter, "inputs": c.inputs, "dims": c.dims}
                                    for c in comps],
                        target=target, build_dir=str(build), seed=plan.seed, repeats=args.repeats)
    report_lib.write_bench(plan, _root(), args.target, results, _cpu_name(), torch.get_num_threads())
    md = build / "bench.md"
    print("\n" + md.read_text())
    print(f"bench: {os.path.relpath(md, _root())} and bench.json")
    return 0


def cmd_clean(args) -> int:
    shutil.rmtree(_root() / "build", ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sam3spec", description="Port SAM3 to TVM from declarative manifests.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check manifests (JSON Schema + semantic rules); exit 2 if invalid")
    p.add_argument("paths", nargs="*", help="manifest files (default: manifests/*.yaml)")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("generate", help="render templates/ into generated/ for the manifests")
    p.add_argument("paths", nargs="*", help="manifest files (default: manifests/*.yaml)")
    p.add_argument("--check", action="store_true", help="exit 1 and name the files if generated/ is out of date")
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("port", help="validate → generate → export → compile → verify → report")
    p.add_argument("manifest", nargs="?", default=DEFAULT_MANIFEST)
    p.add_argument("--target", default="cpu", help="target name from the manifest (default: cpu)")
    p.add_argument("--component", "-c", action="append", default=[], help="only this component (repeatable)")
    p.set_defaults(func=cmd_port)
    p = sub.add_parser("bench", help="TVM vs PyTorch eager latency per compiled component (cpu)")
    p.add_argument("manifest", nargs="?", default=DEFAULT_MANIFEST)
    p.add_argument("--target", default="cpu", help="a cpu target name from the manifest (default: cpu)")
    p.add_argument("--component", "-c", action="append", default=[], help="only this component (repeatable)")
    p.add_argument("--repeats", type=int, default=None,
                   help="alternated turns per component (default: enough for 2 s per side, at least 3)")
    p.add_argument("--build", action="store_true", help="port the components that are not compiled yet first")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("clean", help="remove build/")
    p.set_defaults(func=cmd_clean)
    args = parser.parse_args(argv)
    return args.func(args)
