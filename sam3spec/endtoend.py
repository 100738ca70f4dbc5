"""`predict` and `e2e`: SAM3's own pipeline with every network on the compiled components (the manifest's
`predict.app`), optionally against PyTorch under the parity contract. Bad input is one line and exit 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sam3spec import plan as plan_lib, report as report_lib
from sam3spec.loading import EXIT_INVALID, load_plan, root as _root
from sam3spec.runtime import loader


class Refused(Exception):
    """Bad input to predict / e2e: printed as one line, exit 2."""


def _numbers(text: str, option: str, counts: tuple[int, ...], form: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise Refused(f"{option} {text!r}: need {form} (numbers separated by commas)")
    return values


def prompt_from_args(args) -> dict:
    if not (args.text or args.box or args.point):
        raise Refused("give a prompt: --text \"...\", --box x0,y0,x1,y1 or --point x,y[,label]")
    points = []
    for text in args.point:
        values = _numbers(text, "--point", (2, 3), "x,y or x,y,label")
        points.append(values if len(values) == 3 else values + [1.0])
    return {"name": "prompt", "text": args.text,
            "boxes": [_numbers(t, "--box", (4,), "x0,y0,x1,y1") for t in args.box], "points": points}


_NO_APP = {"predict": "has no `predict` section: nothing says which app runs it end to end",
           "track": "has no `track` section: it is not a video model (try manifests/sam3-video.yaml)"}


def app_plan(manifest: str, target: str, section: str = "predict") -> plan_lib.Plan:
    """The plan of a valid manifest that has `section` (predict or track) and `target`, or Refused."""
    plan = load_plan(manifest, _root())
    if plan is None:
        raise Refused(f"{manifest} is not a valid manifest (errors above)")
    if getattr(plan, section) is None:
        raise Refused(f"{manifest} {_NO_APP[section]}")
    if target not in plan.targets:
        raise Refused(f"{manifest}: no target {target!r} (has: {', '.join(plan.targets)})")
    return plan


def e2e_section(plan: plan_lib.Plan, section: str, what: str) -> dict:
    """The `e2e` entry of the plan's predict or track section (`what` it holds, for the message), or Refused."""
    e2e = (getattr(plan, section) or {}).get("e2e")
    if not e2e:
        raise Refused(f"{plan.manifest}: `{section}` has no `e2e` section ({what})")
    return e2e


def ready_build(plan: plan_lib.Plan, args, names: list[str], weights: dict) -> Path:
    """The build directory, once every component `names` is compiled for the target and holds `weights`."""
    from sam3spec.runtime import predict

    build = plan.build_dir(_root(), args.target)
    missing = [name for name in names if not loader.compiled(build / name)]
    if missing:
        raise Refused(f"{', '.join(missing)} not built for {args.target} under {os.path.relpath(build, _root())}; "
                       f"build them with `python -m sam3spec port {plan.manifest} --target {args.target}` "
                       f"(or nox -s port-{args.target} -- {plan.manifest})")
    problem = predict.weights_problem(build, names, weights)
    if problem:
        env = plan.model["weights"].get("checkpoint_env", "SAM3SPEC_CHECKPOINT")
        command = f"python -m sam3spec port {plan.manifest} --target {args.target}"
        how = f"`{env}={weights['checkpoint']} {command}`" if weights.get("checkpoint") else f"`{command}` ({env} unset)"
        raise Refused(f"{problem}; rebuild with {how}")
    return build


def weights_for(plan: plan_lib.Plan, checkpoint: str | None) -> tuple[dict, dict]:
    """The model section with --checkpoint (if given) as its checkpoint, and what weights that means."""
    from sam3spec.runtime.checkpoint import weights_source

    model = dict(plan.model)
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise Refused(f"checkpoint {checkpoint}: no such file")
        model["weights"] = {**model["weights"], "checkpoint": str(Path(checkpoint).resolve()), "checkpoint_env": None}
    return model, weights_source(model["weights"], _root() / plan.manifest_dir)


def predict(args) -> int:
    """`predict`: one prompt on the compiled components (and PyTorch with --compare)."""
    from sam3spec.runtime import model as model_lib, predict
    from sam3spec.runtime.resolve import resolve

    try:
        plan = app_plan(args.manifest, args.target)
        prompt = prompt_from_args(args)
        image, problem = predict.open_image(args.image)
        problem = problem or predict.prompt_problem(prompt, *image.size)
        app = resolve(plan.predict["app"])
        problem = problem or app.check(prompt, plan.dims) or (args.compare and predict.parity_too_large(image))
        if problem:
            raise Refused(problem)
        model, weights = weights_for(plan, args.checkpoint)
        names = app.components(prompt)
        build = ready_build(plan, args, names, weights)
    except Refused as exc:
        print(f"sam3spec predict: {exc}", file=sys.stderr)
        return EXIT_INVALID
    threshold = plan.predict["threshold"]
    out = Path(args.out) if args.out else build / "predict"
    info = {"manifest": plan.name, "target": args.target, "image": args.image, "weights": predict.describe(weights)}
    compiled = predict.compiled_model(app, model_cfg=model, sizes=plan.sizes, build_dir=build,
                                      target=plan.targets[args.target]["target"], names=names)
    if not args.compare:
        det, seconds = predict.timed(app.predict, compiled, image, prompt, threshold)
        summary = predict.write(out, image, det, threshold, {**info, "prompt": prompt, "seconds": round(seconds, 2)})
        print(f"{det.path}: {summary['shown']} in {seconds:.1f} s; wrote {os.path.relpath(out, _root())}/"
              f"{{detections.json,overlay.png,masks/}}")
        return 0
    original = model_lib.build_substituted(model, _root() / plan.manifest_dir)
    rows = predict.parity_rows(app, compiled, original, image, [prompt], threshold, plan.predict["contract"], out, info)
    return _parity_report(plan, args, out, image, info, rows)


def _parity_report(plan, args, out: Path, image, info: dict, rows: list[dict]) -> int:
    parity = {**info, "threshold": plan.predict["threshold"], "contract": plan.predict["contract"],
              "image_size": list(image.size), "prompts": rows}
    report_lib.write_parity(out, parity)
    print("\n" + (out / "parity.md").read_text())
    print(f"parity: {os.path.relpath(out, _root())}/parity.md and parity.json")
    return 0 if all(row["ok"] for row in rows) else 1


def e2e(args, build) -> int:
    """`e2e`: the manifest's predict.e2e prompts under the parity contract; build(missing) ports what is not
    compiled (with --build)."""
    from sam3spec.runtime import model as model_lib, predict
    from sam3spec.runtime.resolve import resolve

    try:
        plan = app_plan(args.manifest, args.target)
        e2e = e2e_section(plan, "predict", "image and prompts to check")
        app = resolve(plan.predict["app"])
        image, problem = predict.open_image(model_lib.package_file(e2e["image"]))
        for prompt in e2e["prompts"]:
            problem = problem or predict.prompt_problem(prompt, *image.size) or app.check(prompt, plan.dims)
        if problem:
            raise Refused(problem)
        model, weights = weights_for(plan, None)
        names = [c.name for c in plan.components if c.name in {n for p in e2e["prompts"] for n in app.components(p)}]
        missing = [name for name in names if not loader.compiled(plan.build_dir(_root(), args.target) / name)]
        if missing and args.build:
            print(f"e2e: porting {', '.join(missing)} first", flush=True)
            build(missing)
        build = ready_build(plan, args, names, weights)
    except Refused as exc:
        print(f"sam3spec e2e: {exc}", file=sys.stderr)
        return EXIT_INVALID
    out = build / "e2e"
    info = {"manifest": plan.name, "target": args.target,
            "image": f"{e2e['image']['package']}/{e2e['image']['file']}", "weights": predict.describe(weights)}
    compiled = predict.compiled_model(app, model_cfg=model, sizes=plan.sizes, build_dir=build,
                                      target=plan.targets[args.target]["target"], names=names)
    original = model_lib.build_substituted(model, _root() / plan.manifest_dir)
    rows = predict.parity_rows(app, compiled, original, image, e2e["prompts"], plan.predict["threshold"],
                               plan.predict["contract"], out, info)
    return _parity_report(plan, args, out, image, info, rows)
