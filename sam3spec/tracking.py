"""`track` and `e2e-video`: SAM3's own video inference with every network on the compiled components (the
manifest's `track.app`), optionally against PyTorch under the manifest's `track.contract`. Bad input is one line
and exit 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sam3spec import plan as plan_lib
from sam3spec.endtoend import Refused, app_plan, e2e_section, prompt_from_args, ready_build, weights_for
from sam3spec.loading import EXIT_INVALID, root as _root
from sam3spec.runtime import loader, track_parity
from sam3spec.runtime.artifacts import atomic_path, progress
from sam3spec.runtime.clip import ClipError


def _prompt_problem(prompt: dict, clip, frame: int) -> str | None:
    from sam3spec.runtime import predict

    if prompt.get("points") and (prompt.get("text") or prompt.get("boxes")):
        return "a click (--point) prompts the tracker alone: give --text / --box, or --point, not both"
    if not 0 <= frame < len(clip.frames):
        return f"--frame {frame} is outside the clip (frames 0 to {len(clip.frames) - 1})"
    return predict.prompt_problem(prompt, *clip.size)


class Session:
    """The video model (SAM3's, with the manifest's substitutions) and the compiled components, for one or more
    prompts: `run(...)` tracks one prompt on the compiled components, and on PyTorch first with compare=True."""

    def __init__(self, plan: plan_lib.Plan, model_cfg: dict, weights: dict, build: Path, target: str, names: list[str]):
        from sam3spec.runtime import model as model_lib, predict, threads
        from sam3spec.runtime.resolve import resolve

        self.plan, self.target = plan, target
        self.app = resolve(plan.track["app"])
        self.net = model_lib.build_substituted(model_cfg, _root() / plan.manifest_dir)
        # random weights: the detector thresholds for text and box prompts (see thresholds())
        self.lowered = {} if weights.get("checkpoint") else dict(plan.track.get("without_checkpoint", {}))
        for name in self.lowered:
            if not hasattr(self.net, name):
                raise Refused(f"track.without_checkpoint: the video model has no attribute {name!r}")
        self.sam3_values = {name: getattr(self.net, name) for name in self.lowered}
        self.tvm_threads = threads.configure()
        self.run_compiled = predict.tvm_run(build, plan.targets[target]["target"], names)
        self.bpe = model_lib.package_file(model_cfg["vocabulary"])
        self.info = {"manifest": plan.name, "target": target, "weights": predict.describe(weights)}

    def thresholds(self, prompt: dict) -> None:
        """The manifest's random-weight detection thresholds for a text or box prompt; SAM3's own for a click,
        whose frames the detector also runs on with a placeholder caption (with real weights it finds nothing
        there; at random weights, under lowered thresholds, its flat scores would flood NMS)."""
        values = self.sam3_values if prompt.get("points") else self.lowered
        for name, value in values.items():
            setattr(self.net, name, value)

    @staticmethod
    def components(plan: plan_lib.Plan, prompts: list[dict]) -> list[str]:
        from sam3spec.runtime.resolve import resolve

        app = resolve(plan.track["app"])
        return sorted({name for prompt in prompts for name in app.components(prompt)})

    def _track(self, label: str, clip, prompt: dict, frame: int):
        from sam3spec.runtime.predict import timed

        self.thresholds(prompt)
        total = len(clip.frames) - frame

        def on_frame(index, result):
            progress(f"{label}: frame {index} ({index - frame + 1}/{total}): {len(result.ids)} object(s)")

        return timed(self.app.track, self.net, clip.source, prompt, frame, on_frame)

    def run(self, clip, prompt: dict, frame: int, out: Path, video: str, compare: bool) -> dict:
        from sam3spec.runtime import track_outputs

        info = {**self.info, "video": video, "prompt": prompt, "frame": frame}
        if compare:
            reference, torch_s = self._track("PyTorch", clip, prompt, frame)
        installed = self.app.compiled(self.net, self.run_compiled, self.plan.sizes, self.bpe)
        try:
            results, tvm_s = self._track(f"TVM ({self.target})", clip, prompt, frame)
        finally:
            self.app.restore(installed)
        objects = track_outputs.write(out, clip, results, {**info, "seconds": round(tvm_s, 2)})
        summary = {"objects": objects, "seconds": tvm_s}
        if compare:
            track_outputs.write(out / "pytorch", clip, reference, {**info, "seconds": round(torch_s, 2)}, "PyTorch")
            parity = {**info, "frame_count": len(clip.frames), "size": list(clip.size), "prompt_text": _describe(prompt),
                      "seconds": {"tvm": round(tvm_s, 2), "pytorch": round(torch_s, 2)},
                      **track_parity.compare(reference, results, self.plan.track["contract"])}
            track_parity.write(out, parity)
            summary["parity"] = parity
        return summary


def _describe(prompt: dict) -> str:
    parts = [f"text {prompt['text']!r}"] if prompt.get("text") else []
    parts += [f"box {','.join(f'{v:g}' for v in b)}" for b in prompt.get("boxes") or []]
    parts += [f"click {x:g},{y:g} (label {label:g})" for x, y, label in prompt.get("points") or []]
    return ", ".join(parts)


def _verdict(out: Path, parity: dict) -> str:
    frames = parity["frames"]
    passed = sum(r["ok"] for r in frames)
    return (f"parity: {passed}/{len(frames)} frames meet the contract, worst frame {parity['worst_frame']}"
            f" ({'pass' if parity['ok'] else 'FAIL'}); {os.path.relpath(out, _root())}/parity.md, iou.svg")


def track(args) -> int:
    """`track`: one prompt over a clip on the compiled components (and PyTorch with --compare)."""
    from sam3spec.runtime.clip import open_clip
    from sam3spec.runtime.resolve import resolve

    try:
        plan = app_plan(args.manifest, args.target, "track")
        prompt = prompt_from_args(args)
        clip = open_clip(args.video)
        problem = _prompt_problem(prompt, clip, args.frame)
        if problem:
            raise Refused(problem)
        names = resolve(plan.track["app"]).components(prompt)
        model_cfg, weights = weights_for(plan, args.checkpoint)
        build = ready_build(plan, args, names, weights)
        session = Session(plan, model_cfg, weights, build, args.target, names)
    except (Refused, ClipError) as exc:
        print(f"sam3spec track: {exc}", file=sys.stderr)
        return EXIT_INVALID
    out = Path(args.out) if args.out else build / "track"
    summary = session.run(clip, prompt, args.frame, out, args.video, args.compare)
    print(f"{len(summary['objects'])} object(s) tracked over {len(clip.frames) - args.frame} frame(s) in "
          f"{summary['seconds']:.1f} s; wrote {os.path.relpath(out, _root())}/{{tracks.json,overlay.gif,masks/}}")
    if "parity" not in summary:
        return 0
    print("\n" + track_parity.markdown(summary["parity"]))
    print(_verdict(out, summary["parity"]))
    return 0 if summary["parity"]["ok"] else 1


def e2e_video(args, build) -> int:
    """`e2e-video`: the manifest's track.e2e prompts on its pan and zoom clip, TVM against PyTorch; build(missing)
    ports what is not compiled (with --build)."""
    try:
        plan = app_plan(args.manifest, args.target, "track")
        e2e = e2e_section(plan, "track", "clip and prompts to check")
        names = Session.components(plan, e2e["prompts"])
        missing = [n for n in names if not loader.compiled(plan.build_dir(_root(), args.target) / n)]
        if missing and args.build:
            print(f"e2e-video: porting {', '.join(missing)} first", flush=True)
            build(missing)
        out = plan.build_dir(_root(), args.target) / "e2e-video"
        clip = _e2e_clip(plan, out / "clip")
        for prompt in e2e["prompts"]:
            problem = _prompt_problem(prompt, clip, 0)
            if problem:
                raise Refused(f"prompt {prompt['name']}: {problem}")
        model_cfg, weights = weights_for(plan, None)
        build_dir = ready_build(plan, args, names, weights)
        session = Session(plan, model_cfg, weights, build_dir, args.target, names)
    except (Refused, ClipError) as exc:
        print(f"sam3spec e2e-video: {exc}", file=sys.stderr)
        return EXIT_INVALID
    spec = e2e["clip"]
    video = f"{spec['image']['package']}/{spec['image']['file']}, panned and zoomed"
    rows = []
    for prompt in e2e["prompts"]:
        progress(f"prompt {prompt['name']}: {_describe(prompt)}")
        summary = session.run(clip, prompt, 0, out / prompt["name"], video, compare=True)
        rows.append((prompt["name"], summary["parity"]))
        print(f"{prompt['name']}: " + _verdict(out / prompt["name"], summary["parity"]))
    text = "\n\n".join(track_parity.markdown(parity) for _, parity in rows)
    with atomic_path(out / "parity.md") as tmp:
        tmp.write_text(text)
    print("\n" + text)
    return 0 if all(parity["ok"] for _, parity in rows) else 1


def _e2e_clip(plan: plan_lib.Plan, folder: Path, first: int | None = None):
    """The manifest's track.e2e clip (its `first` frames, or all), written under `folder` as numbered frames,
    opened as track() reads it."""
    from PIL import Image

    from sam3spec.runtime import clip as clip_lib, model as model_lib

    spec = plan.track["e2e"]["clip"]
    with Image.open(model_lib.package_file(spec["image"])) as im:
        frames = clip_lib.pan_and_zoom(im.convert("RGB"), spec["frames"], tuple(spec["size"]))
    clip_lib.write_frames(frames[:first], folder)
    return clip_lib.open_clip(str(folder))


BENCH_FRAMES = 4  # `bench --track` tracks the e2e clip's first frames unless --frames says (~2.5 min a run at full size)


def bench_frames(session: Session, clip, prompt: dict, rounds: int = 1) -> dict:
    """Wall time of one tracked frame: propagate_in_video over the clip (per frame: the detector, the tracker's
    memory attention, heads and memory encoder, association; init_state and the prompt itself left out) divided
    by its frames, PyTorch and TVM alternated `rounds` times; medians."""
    import statistics

    times: dict[str, list[float]] = {"pytorch": [], "tvm": []}
    objects, frames = {}, 0
    for _ in range(rounds):
        for side in ("pytorch", "tvm"):
            timings: dict = {}
            installed = session.app.compiled(session.net, session.run_compiled, session.plan.sizes, session.bpe) \
                if side == "tvm" else None
            session.thresholds(prompt)
            try:
                results = session.app.track(session.net, clip.source, prompt, 0, timings=timings)
            finally:
                if installed is not None:
                    session.app.restore(installed)
            frames = timings["frames"]
            times[side].append(timings["propagate_s"] / frames)
            objects[side] = max(len(r.ids) for r in results.values())
            progress(f"tracked-frame bench: {side} {1e3 * times[side][-1]:.0f} ms per frame")
    pytorch, tvm = (statistics.median(times[k]) * 1e3 for k in ("pytorch", "tvm"))
    return {"prompt": _describe(prompt), "frames": frames, "rounds": rounds, "objects": objects,
            "pytorch_ms": round(pytorch, 1), "tvm_ms": round(tvm, 1), "ratio": round(tvm / pytorch, 3)}


def bench_track(args, cpu: str) -> int:
    """`bench --track`: one tracked frame on the manifest's e2e clip, each of its prompts, TVM vs PyTorch."""
    try:
        plan = app_plan(args.manifest, args.target, "track")
        e2e = e2e_section(plan, "track", "the clip and prompts to time")
        prompts = e2e["prompts"]
        app_names = Session.components(plan, prompts)
        model_cfg, weights = weights_for(plan, None)
        build = ready_build(plan, args, app_names, weights)
        frames, length = getattr(args, "frames", None) or BENCH_FRAMES, e2e["clip"]["frames"]
        if frames > length:
            raise Refused(f"--frames {frames}: the e2e clip has {length} frames")
        clip = _e2e_clip(plan, build / "bench-track" / "clip", frames)
        session = Session(plan, model_cfg, weights, build, args.target, app_names)
    except (Refused, ClipError) as exc:
        print(f"sam3spec bench: {exc}", file=sys.stderr)
        return EXIT_INVALID
    import torch

    rows = [{"name": p["name"], **bench_frames(session, clip, p)} for p in prompts]
    threads = f"{torch.get_num_threads()} PyTorch / {session.tvm_threads} TVM"
    result = {"manifest": plan.name, "target": args.target, "cpu": cpu, "threads": threads,
              "clip": f"{len(clip.frames)} frames {clip.size[0]}x{clip.size[1]}", "prompts": rows}
    lines = [f"# {plan.name} on {args.target}: one tracked frame, TVM vs PyTorch", "",
             f"{cpu}, {threads} threads. The manifest's e2e clip ({result['clip']}); a frame: propagate_in_video over the "
             "clip (detection, tracking with memory, association, memory encoding; not init_state or the prompt) "
             "divided by its frames; PyTorch and TVM alternate, medians.", "",
             "| prompt | objects (max) | frames | PyTorch ms | TVM ms | TVM / PyTorch |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} ({r['prompt']}) | {r['objects']['tvm']} | {r['frames']} x {r['rounds']} | {r['pytorch_ms']:.0f} "
              f"| {r['tvm_ms']:.0f} | {r['ratio']:.2f} |" for r in rows]
    from sam3spec.runtime.artifacts import write_json

    write_json(build / "bench_track.json", result)
    with atomic_path(build / "bench_track.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    print(f"bench: {os.path.relpath(build / 'bench_track.md', _root())} and bench_track.json")
    return 0
