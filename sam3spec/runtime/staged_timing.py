"""Time a tuning stage's libraries where the device is, with TVM's runtime alone (no compiler there): every task's
rules' schedule and candidates, each called on random inputs with the stage's evaluator; timings.json beside
stage.json. Each task runs in its own process, one library after another, each result written as it comes: a
candidate that breaks the device context (an illegal address) costs only itself, the rest go on in a new process.

    usage: python -m sam3spec.runtime.staged_timing STAGE_DIR [STAGE_DIR ...]   (TVM_USE_RUNTIME_LIB=1 there)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

STAGE = "stage.json"  # what --stage wrote: the round, the target, the evaluator, the tasks
TIMINGS = "timings.json"  # what this module writes beside it, and --collect reads
CACHE = ".cuda-cache"  # beside the tasks: each kernel's fatbin by its source's hash
WARM_WORKERS = 12  # processes compiling a stage's CUDA candidates at once (nvcc, ~1.5 s each)


def time_files(folder: Path, files: list[str], args: list, target: dict, evaluator: dict | None) -> None:
    """Worker: one JSON line per library on stdout, {file, secs} or {file, error}; with no evaluator, each is
    loaded and called once only (the warm-up that compiles CUDA source into the cache)."""
    import numpy as np
    import tvm

    from sam3spec.runtime import loader, measure

    dev = loader.device_for(target)
    if target["kind"] == "cuda":
        loader.cuda_jit(target.get("arch", "sm_90"), folder.parent / CACHE)
    rng = np.random.default_rng(0)
    tensors = []
    for dtype, shape in args:
        data = rng.standard_normal(shape).astype(dtype) if "float" in dtype else np.zeros(shape, dtype)
        tensors.append(tvm.runtime.tensor(data, dev))
    for name in files:
        try:
            lib = tvm.runtime.load_module(str(folder / name))
            if evaluator is None:
                lib[lib.entry_name](*tensors)
                dev.sync()
                print(json.dumps({"file": name, "secs": 0.0}), flush=True)
                continue
            f = lib.time_evaluator(lib.entry_name, dev, number=evaluator["number"], repeat=evaluator["repeat"],
                                   min_repeat_ms=evaluator["min_repeat_ms"])
            results = sorted(f(*tensors).results)
            line = {"file": name, "secs": float(results[len(results) // 2])}
        except Exception as exc:  # noqa: BLE001 - TVM's own error types: the candidate failed, say why
            line = {"file": name, "error": measure.last_line(str(exc)) or type(exc).__name__}
        print(json.dumps(line), flush=True)


def libraries(task: dict) -> list[str]:
    """A staged task's library files: the rules' schedule (where it built) first, then the candidates."""
    return ([task["rules"]] if task["rules"] else []) + [c["file"] for c in task["candidates"]]


def time_task(folder: Path, task: dict, target: dict, evaluator: dict | None, timeout_s: float = 600,
              files: list[str] | None = None) -> dict:
    """{file: {secs} or {error}} for the task's rules and candidates, restarting the worker after a crash."""
    if files is None:
        files = libraries(task)
    out: dict[str, dict] = {}
    while len(out) < len(files):
        rest = [f for f in files if f not in out]
        spec = json.dumps({"folder": str(folder), "files": rest, "args": task["args"], "target": target,
                           "evaluator": evaluator})
        try:
            proc = subprocess.run([sys.executable, "-m", "sam3spec.runtime.staged_timing", "--worker", spec],
                                  capture_output=True, text=True, timeout=timeout_s)
            stdout, why = proc.stdout, (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        except subprocess.TimeoutExpired as exc:
            stdout, why = exc.stdout or "", f"no answer in {timeout_s:.0f} s"
            stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
        for line in stdout.splitlines():
            if line.startswith("{"):
                got = json.loads(line)
                out[got.pop("file")] = got
        if len(out) < len(files):  # the worker died on the next file: that one failed, the rest go on
            out[[f for f in files if f not in out][0]] = {"error": f"the worker died: {why[:300]}"}
    return out


def warm(directory: Path, staged: dict) -> None:
    """Every library loaded and called once, WARM_WORKERS processes at once, so that nvcc compiles the
    candidates' CUDA source in parallel into the cache before they are timed one after another."""
    from concurrent.futures import ThreadPoolExecutor

    started = time.monotonic()
    jobs = [(task, [f]) for task in staged["tasks"] for f in libraries(task)]
    chunks = [jobs[i::WARM_WORKERS] for i in range(WARM_WORKERS)]

    def run(chunk):
        for task, files in chunk:
            time_task(directory / task["name"], task, staged["target"], None, files=files)

    with ThreadPoolExecutor(WARM_WORKERS) as pool:
        list(pool.map(run, chunks))
    print(f"[{staged['component']}] {len(jobs)} libraries compiled and called once ({time.monotonic() - started:.0f} s)",
          flush=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        spec = json.loads(argv[1])
        time_files(Path(spec["folder"]), spec["files"], spec["args"], spec["target"], spec["evaluator"])
        return 0
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    for directory in map(Path, argv):
        staged = json.loads((directory / STAGE).read_text())
        target = staged["target"]
        if target["kind"] == "cuda":
            warm(directory, staged)
        timings = {}
        for i, task in enumerate(staged["tasks"], 1):
            started = time.monotonic()
            timings[task["name"]] = got = time_task(directory / task["name"], task, target, staged["evaluator"])
            secs = [v["secs"] for k, v in got.items() if k != task["rules"] and "secs" in v]
            rules = got.get(task["rules"], {}).get("secs") if task["rules"] else None
            print(f"[{staged['component']}] task {i}/{len(staged['tasks'])} {task['name']}: {len(secs)} of "
                  f"{len(task['candidates'])} ran, best {min(secs) * 1e3:.3f} ms" if secs else "none ran",
                  f"rules {rules * 1e3:.3f} ms" if rules else "rules failed", f"({time.monotonic() - started:.0f} s)",
                  flush=True)
        (directory / TIMINGS).write_text(json.dumps(timings, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
