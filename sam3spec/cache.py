"""The step cache: a step's result (build/.../<component>/<step>.json) is reused when it succeeded, its key
(the sha256 of its ingredients, stepkeys.py) is the key now, and the files it wrote are still the ones it
recorded; otherwise the step runs, and `decide` says why in one line. The key is written into the result
last, after the step's files and result are in place, so a run killed at any moment leaves nothing that a
later run takes for complete."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sam3spec.runtime.artifacts import file_problem, read_result, recorded, write_json

CACHED = "cached"


def key(ingredients: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(ingredients.items())).encode()).hexdigest()


def changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """What differs between two ingredient lists, in the order of `new` (then what was dropped)."""
    out = [f"{label} {'changed' if label in old else 'added'}" for label, value in new.items()
           if old.get(label) != value]
    return out + [f"{label} removed" for label in old if label not in new]


def one_line(reasons: list[str]) -> str:
    return reasons[0] + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else "")


def decide(out_dir: Path, step: str, ingredients: dict[str, str], force: bool = False,
           reads: tuple[str, ...] = ()) -> str:
    """CACHED when `step`'s recorded result can be reused as it is; otherwise why it must run. reads: files of
    earlier steps it loads, which must still be the files those steps recorded (else it runs, and its load
    check names the file)."""
    if force:
        return "--force"
    result = read_result(out_dir, step)
    if result is None:
        return "no result from an earlier run"
    if result.get("status") != "ok":
        return {"failed": "it failed last time", "skipped": "it was not run last time (no device)"}.get(
            result.get("status"), f"its last result is {result.get('status')!r}")
    cache = result.get("cache")
    if not cache:
        return "its result has no key (written before the step cache, or its run was cut short)"
    if cache["key"] != key(ingredients):
        return one_line(changes(cache["ingredients"], ingredients) or ["its key changed"])
    wrote = result.get("artifacts", {})
    for name, entry in [*wrote.items(), *((n, recorded(out_dir, n)[0]) for n in reads if n not in wrote)]:
        problem = file_problem(out_dir / name, entry, quick=True) if entry else f"no step records {name}"
        if problem:
            return problem
    return CACHED


def seal(out_dir: Path, step: str, ingredients: dict[str, str], reason: str) -> None:
    """After `step` succeeded: add its key (and why it ran) to its result, the last thing written."""
    result = read_result(out_dir, step)
    result["cache"] = {"key": key(ingredients), "ran_because": reason, "ingredients": ingredients}
    write_json(out_dir / f"{step}.json", result)
