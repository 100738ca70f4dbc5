"""The command line: parses the arguments and dispatches each command, a few steps of the pipeline each:
manifest (load + validate: loading.py) → plan → render → run (port.py, endtoend.py, runtime/) → report."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from sam3spec import plan as plan_lib, render, report as report_lib
from sam3spec.loading import EXIT_INVALID, load_all, load_plan, root as _root
from sam3spec.runtime import loader
from sam3spec.runtime.artifacts import ArtifactError, atomic_path

DEFAULT_MANIFEST = "manifests/sam3-image.yaml"


def _manifest_paths(given: list[str]) -> list[str]:
    return given or sorted(os.path.relpath(p, _root()) for p in (_root() / "manifests").glob("*.yaml"))


def cmd_validate(args) -> int:
    sys.dont_write_bytecode = True  # validation writes nothing, not even __pycache__
    paths = _manifest_paths(args.paths)
    if load_all(paths) is None:
        return EXIT_INVALID
    print(f"{len(paths)} manifest(s) valid: {', '.join(paths)}")
    return 0


def _render_all(paths: list[str]) -> tuple[dict, list[str]] | None:
    manifests = load_all(paths)
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


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def cmd_port(args) -> int:
    from sam3spec import port

    plan = load_plan(args.manifest, _root())
    names = _components(plan, args) if plan else None
    if names is None:
        return EXIT_INVALID
    # bench --build and e2e --build call this with manifest, target and component only
    rpc, verify_only = getattr(args, "rpc", None), getattr(args, "verify_only", False)
    force, dry_run = getattr(args, "force", False), getattr(args, "dry_run", False)
    if rpc and (problem := port.rpc_problem(rpc)):
        print(f"--rpc {rpc}: {problem}", file=sys.stderr)
        return EXIT_INVALID
    if verify_only:
        missing = [n for n in names if not loader.compiled(plan.build_dir(_root(), args.target) / n)]
        if missing:
            print(f"--verify-only: {', '.join(missing)} not compiled under {plan.build_dir(_root(), args.target)}; "
                  f"compile them with `python -m sam3spec port {args.manifest} --target {args.target}` and copy "
                  "build/ here", file=sys.stderr)
            return EXIT_INVALID
    try:
        jobs = getattr(args, "jobs", None) or port.jobs_default()
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    decisions = port.run(plan, _root(), args.target, names, rpc=rpc, verify_only=verify_only, force=force,
                         dry_run=dry_run, jobs=jobs)
    if dry_run:
        return 0
    return _report(plan, args.target, names, decisions)


def _report(plan: plan_lib.Plan, target: str, names: list[str], decisions: dict | None = None) -> int:
    report = report_lib.write(plan, _root(), target, names, decisions)
    md = plan.build_dir(_root(), target) / "report.md"
    print("\n" + md.read_text())
    print(f"report: {os.path.relpath(md, _root())} and report.json")
    return 1 if report["failed"] else 0


def cmd_report(args) -> int:
    plan = load_plan(args.manifest, _root())
    names = _components(plan, args) if plan else None
    if names is None:
        return EXIT_INVALID
    return _report(plan, args.target, names)


def _cpu_name() -> str:
    import platform

    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical CPUs"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"


def cmd_bench(args) -> int:
    plan = load_plan(args.manifest, _root())
    names = _components(plan, args) if plan else None
    if names is None:
        return EXIT_INVALID
    target = plan.targets[args.target]["target"]
    if target["kind"] not in ("llvm", "cuda"):
        print(f"{args.manifest}: bench runs on cpu (llvm) and cuda targets; {args.target!r} is {target['kind']}",
              file=sys.stderr)
        return EXIT_INVALID
    if args.frames and not args.track:
        print("bench: --frames is for --track (the frames of the clip tracked)", file=sys.stderr)
        return EXIT_INVALID
    if args.track:
        from sam3spec import tracking

        return tracking.bench_track(args, _cpu_name())
    comps = [plan.component(name) for name in names]
    build = plan.build_dir(_root(), args.target)
    missing = [c.name for c in comps if not loader.compiled(build / c.name)]
    if missing and args.build:
        print(f"bench: porting {', '.join(missing)} first", flush=True)
        cmd_port(argparse.Namespace(manifest=args.manifest, target=args.target, component=missing))
        missing = [name for name in missing if not loader.compiled(build / name)]
    if missing:
        print(f"not compiled for {args.target}: {', '.join(missing)}; build them with "
              f"`python -m sam3spec port {args.manifest} --target {args.target}` (or nox -s port-cpu)", file=sys.stderr)
        return EXIT_INVALID
    import torch

    from sam3spec.runtime import bench

    results = bench.run(model=plan.model, manifest_dir=str(_root() / plan.manifest_dir),
                        components=[{"name": c.name, "adapter": c.adapter, "inputs": c.inputs, "dims": c.dims}
                                    for c in comps],
                        target=target, build_dir=str(build), seed=plan.seed, repeats=args.repeats,
                        autocast=plan.targets[args.target].get("pipeline_options", {}).get("mixed_precision"))
    machine = torch.cuda.get_device_name() if target["kind"] == "cuda" else _cpu_name()
    report_lib.write_bench(plan, _root(), args.target, results, machine, torch.get_num_threads())
    md = build / "bench.md"
    print("\n" + md.read_text())
    print(f"bench: {os.path.relpath(md, _root())} and bench.json")
    return 0


def cmd_tune(args) -> int:
    from sam3spec import tuning

    plan = load_plan(args.manifest, _root())
    names = _components(plan, args) if plan else None
    if names is None:
        return EXIT_INVALID
    budget = plan.targets[args.target].get("tuning")
    if not budget:
        print(f"{args.manifest}: target {args.target!r} declares no tuning budget (targets[].tuning: tasks, trials)",
              file=sys.stderr)
        return EXIT_INVALID
    tracker = dict(budget.get("tracker") or {})
    address, key = args.tracker or tracker.get("address"), args.key or tracker.get("key")
    if (args.tracker or args.key or tracker) and (problem := tuning.tracker_problem(address or "", key)):
        print(f"--tracker {address}: {problem}", file=sys.stderr)
        return EXIT_INVALID
    if args.collect and (problem := tuning.collect_problem(Path(args.collect), names)):
        print(f"--collect {args.collect}: {problem}", file=sys.stderr)
        return EXIT_INVALID
    results = tuning.run(plan, _root(), args.target, names, tuning.script_arguments(args, address, key),
                         Path(args.records).resolve() if args.records else None,
                         {flag: Path(d).resolve() for flag, d in (("--stage", args.stage), ("--collect", args.collect))
                          if d})
    print("\n" + "\n".join(tuning.summary(results)))
    return 0 if all(r.get("status") == "ok" for r in results.values()) else 1


def cmd_profile(args) -> int:
    plan = load_plan(args.manifest, _root())
    names = _components(plan, args) if plan else None
    if names is None:
        return EXIT_INVALID
    build = plan.build_dir(_root(), args.target)
    missing = [name for name in names if not loader.compiled(build / name)]
    if missing:
        print(f"not compiled for {args.target}: {', '.join(missing)}", file=sys.stderr)
        return EXIT_INVALID
    from sam3spec.runtime import profile

    text = "".join(profile.markdown(name, profile.run(str(build / name), plan.targets[args.target]["target"]))
                   for name in names)
    with atomic_path(build / "profile.md") as tmp:
        tmp.write_text(f"# {plan.name} on {args.target}: kernel by kernel\n\n{text}")
    print(text + f"profile: {os.path.relpath(build / 'profile.md', _root())} (and <component>/profile.json)")
    return 0


def cmd_predict(args) -> int:
    from sam3spec import endtoend

    return endtoend.predict(args)


def cmd_e2e(args) -> int:
    from sam3spec import endtoend

    def build(missing: list[str]) -> None:
        cmd_port(argparse.Namespace(manifest=args.manifest, target=args.target, component=missing))

    return endtoend.e2e(args, build)


def cmd_track(args) -> int:
    from sam3spec import tracking

    return tracking.track(args)


def cmd_e2e_video(args) -> int:
    from sam3spec import tracking

    def build(missing: list[str]) -> None:
        cmd_port(argparse.Namespace(manifest=args.manifest, target=args.target, component=missing))

    return tracking.e2e_video(args, build)


def cmd_clean(args) -> int:
    shutil.rmtree(_root() / "build", ignore_errors=True)
    return 0


class _OneLineErrors(argparse.ArgumentParser):
    """Usage errors as one line (`sam3spec predict: error: ...`), exit 2; --help still shows the usage."""

    def error(self, message):
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineErrors(prog="sam3spec", description="Port SAM3 to TVM from declarative manifests.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineErrors)
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
    p.add_argument("--rpc", metavar="HOST:PORT",
                   help="verify on the device of a TVM RPC server (`python -m tvm.exec.rpc_server` on a Mac for metal)")
    p.add_argument("--verify-only", action="store_true",
                   help="libraries compiled on another machine (build/ copied here): rebuild weights and reference "
                        "from the seed, then verify; needs the TVM runtime, not its compiler")
    p.add_argument("--jobs", "-j", type=_positive, default=None, metavar="N",
                   help="components ported at once, each step its own process (default: $SAM3SPEC_JOBS or 1; "
                        "each step process builds its own model: at full size, memory grows with N)")
    p.add_argument("--force", action="store_true", help="run every step, whatever the step cache holds")
    p.add_argument("--dry-run", action="store_true",
                   help="say which steps would run and why (or `cached`), and run none")
    p.set_defaults(func=cmd_port)
    p = sub.add_parser("report", help="rewrite a target's report from its components' step results (verified elsewhere)")
    p.add_argument("manifest", nargs="?", default=DEFAULT_MANIFEST)
    p.add_argument("--target", default="cpu", help="target name from the manifest (default: cpu)")
    p.add_argument("--component", "-c", action="append", default=[], help="only this component (repeatable)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("bench", help="TVM vs PyTorch eager latency per compiled component (cpu)")
    p.add_argument("manifest", nargs="?", default=DEFAULT_MANIFEST)
    p.add_argument("--target", default="cpu", help="a cpu target name from the manifest (default: cpu)")
    p.add_argument("--component", "-c", action="append", default=[], help="only this component (repeatable)")
    p.add_argument("--repeats", type=int, default=None,
                   help="alternated turns per component (default: enough for 2 s per side, at least 3)")
    p.add_argument("--build", action="store_true", help="port the components that are not compiled yet first")
    p.add_argument("--track", action="store_true",
                   help="instead: one tracked frame (detector + tracker) on the manifest's track.e2e clip (video manifests)")
    p.add_argument("--frames", type=_positive, default=None, metavar="N",
                   help="with --track: track the clip's first N frames (default 4)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("tune", help="MetaSchedule on each component's heaviest kernels; records into tuning/")
    p.add_argument("manifest", nargs="?", default=DEFAULT_MANIFEST)
    p.add_argument("--target", default="cpu", help="target name from the manifest (default: cpu)")
    p.add_argument("--component", "-c", action="append", default=[], help="only this component (repeatable)")
    p.add_argument("--tasks", type=int, help="tasks per component (default: the manifest's tuning.tasks)")
    p.add_argument("--task", action="append", default=[], metavar="NAME",
                   help="only this task (repeatable; names as tune.json lists them): re-tune one kernel")
    p.add_argument("--trials", type=int, help="measured candidates per task (default: the manifest's tuning.trials)")
    p.add_argument("--tracker", metavar="HOST:PORT",
                   help="measure on devices a TVM RPC tracker holds (`python -m tvm.exec.rpc_tracker`)")
    p.add_argument("--key", help="their device key (`python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY`)")
    p.add_argument("--records", metavar="DIR", help="write records under DIR/<component> instead of tuning/")
    staged = p.add_mutually_exclusive_group()  # --stage builds a round, --collect reads one back
    staged.add_argument("--stage", metavar="DIR", help="no device here: build one search round's candidates into "
                   "DIR/<component>, for `python -m sam3spec.runtime.staged_timing` to time where the device is")
    staged.add_argument("--collect", metavar="DIR", help="read the device's timings in DIR/<component> back: records "
                   "where a candidate beat the rules, and the next --stage round's cost model")
    p.add_argument("--keep-slower", action="store_true",
                   help="keep MetaSchedule's best record even where the pipeline's rules measured faster")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("profile", help="where each compiled component's time goes, kernel by kernel (on this machine's device)")
    p.add_argument("manifest", nargs="?", default=DEFAULT_MANIFEST)
    p.add_argument("--target", default="cpu", help="target name from the manifest (default: cpu)")
    p.add_argument("--component", "-c", action="append", default=[], help="only this component (repeatable)")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("predict", help="one prompt end to end on the compiled components: masks, boxes, scores")
    p.add_argument("--manifest", "-m", default=DEFAULT_MANIFEST)
    p.add_argument("--target", default="cpu", help="target name from the manifest (default: cpu)")
    p.add_argument("--image", required=True, help="the photograph (any format PIL reads)")
    p.add_argument("--text", help="a text prompt, e.g. \"a cat\"")
    p.add_argument("--box", action="append", default=[], metavar="X0,Y0,X1,Y1",
                   help="a box in pixels (repeatable); with --text, exemplars for it; with --point, SAM's box")
    p.add_argument("--point", action="append", default=[], metavar="X,Y[,LABEL]",
                   help="a point in pixels, label 1 (default) foreground or 0 background (repeatable): SAM's interactive path")
    p.add_argument("--checkpoint", help="the weights the artifacts were built with (default: the manifest's)")
    p.add_argument("--out", help="output directory (default: build/<manifest>/<target>/predict)")
    p.add_argument("--compare", action="store_true",
                   help="also run PyTorch with the same weights and write a parity report (exit 1 if outside the contract)")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("e2e", help="the manifest's end-to-end parity check (predict.e2e): every prompt, TVM vs PyTorch")
    p.add_argument("manifest", nargs="?", default=DEFAULT_MANIFEST)
    p.add_argument("--target", default="cpu", help="target name from the manifest (default: cpu)")
    p.add_argument("--build", action="store_true", help="port the components that are not compiled yet first")
    p.set_defaults(func=cmd_e2e)

    p = sub.add_parser("track", help="a prompt tracked through a clip by SAM3's video inference on the compiled components")
    p.add_argument("--manifest", "-m", default="manifests/sam3-video.yaml")
    p.add_argument("--target", default="cpu", help="target name from the manifest (default: cpu)")
    p.add_argument("--video", required=True, help="a folder of frames (JPEG/PNG, numbered) or a video file")
    p.add_argument("--text", help="a text prompt: every matching object is detected and tracked")
    p.add_argument("--box", action="append", default=[], metavar="X0,Y0,X1,Y1",
                   help="a box in pixels of the frames (repeatable): an exemplar, alone or with --text")
    p.add_argument("--point", action="append", default=[], metavar="X,Y[,LABEL]",
                   help="a click in pixels, label 1 (default) foreground or 0 background (repeatable): one object")
    p.add_argument("--frame", type=int, default=0, help="the frame the prompt is on (default 0); tracking runs forward")
    p.add_argument("--checkpoint", help="the weights the artifacts were built with (default: the manifest's)")
    p.add_argument("--out", help="output directory (default: build/<manifest>/<target>/track)")
    p.add_argument("--compare", action="store_true",
                   help="also track with PyTorch, same weights: per-frame parity report (exit 1 if outside the contract)")
    p.set_defaults(func=cmd_track)
    p = sub.add_parser("e2e-video", help="the manifest's tracking parity check (track.e2e): its clip, every prompt")
    p.add_argument("manifest", nargs="?", default="manifests/sam3-video.yaml")
    p.add_argument("--target", default="cpu", help="target name from the manifest (default: cpu)")
    p.add_argument("--build", action="store_true", help="port the components that are not compiled yet first")
    p.set_defaults(func=cmd_e2e_video)

    p = sub.add_parser("clean", help="remove build/")
    p.set_defaults(func=cmd_clean)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ArtifactError as exc:  # a compiled file that is not what its step wrote (predict, bench, e2e)
        print(f"sam3spec {args.command}: {exc}", file=sys.stderr)
        return EXIT_INVALID
