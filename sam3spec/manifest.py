"""Step 1: load a manifest (following `extends`), check it against the JSON Schema and the semantic rules.

Every problem is a `SourceError` located at FILE:LINE:COL; `load` raises `ManifestErrors` with all of them.
Nothing here writes files or imports the modules a manifest names (their source is parsed instead).
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jsonschema

from sam3spec.yamlsource import Location, SourceError, load as load_yaml, locate

SCHEMA = json.loads(resources.files("sam3spec.schema").joinpath("manifest.schema.json").read_text())
NAMED_LISTS = ("dims", "components", "substitutions", "targets", "inputs", "outputs")


class ManifestErrors(Exception):
    def __init__(self, errors: list[SourceError]):
        super().__init__("\n".join(map(str, errors)))
        self.errors = errors


@dataclass
class Manifest:
    path: Path            # the file named by the user
    data: dict            # merged, validated content
    locations: dict       # key path -> Location, across the extends chain

    @property
    def name(self) -> str:
        return self.data["name"]


def _merge(base, over, path=()):
    """`over` on top of `base`: mappings merge by key, lists of named mappings by `name`, the rest replace."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base.get(key), value, path + (key,)) if key in base else value
        return out
    if (isinstance(base, list) and isinstance(over, list) and path and path[-1] in NAMED_LISTS
            and all(isinstance(i, dict) and "name" in i for i in base + over)):
        out = [copy.deepcopy(i) for i in base]
        index = {item["name"]: i for i, item in enumerate(out)}
        for item in over:
            if item["name"] in index:
                out[index[item["name"]]] = _merge(out[index[item["name"]]], item)
            else:
                out.append(item)
        return out
    return over


def _read(path: Path, seen: tuple = ()) -> tuple[dict, dict]:
    """Read one file and, through `extends`, its ancestors; returns merged data and locations."""
    where = Location(str(path), 1, 1)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestErrors([SourceError(where, (), f"cannot read manifest: {exc.strerror}")]) from None
    try:
        data, locs = load_yaml(str(path), text)
    except SourceError as exc:
        raise ManifestErrors([exc]) from None
    parent = data.get("extends")
    if parent is None:
        return data, locs
    if not isinstance(parent, str):
        raise ManifestErrors([SourceError(locate(locs, ("extends",)), ("extends",), "must be a path string")])
    parent_path = (path.parent / parent).resolve()
    if parent_path in seen:
        raise ManifestErrors([SourceError(locate(locs, ("extends",)), ("extends",), "extends itself (cycle)")])
    base, base_locs = _read(parent_path, seen + (path.resolve(),))
    base.pop("extends", None)
    merged = _merge(base, data)
    # Locations: the derived file wins wherever it says something; merged list items are re-keyed by index.
    all_locs = dict(base_locs)
    all_locs.update(_relocate(data, locs, merged))
    return merged, all_locs


def _relocate(over: dict, over_locs: dict, merged: dict) -> dict:
    """Map locations of `over`'s named-list items to their indices in `merged`."""
    out = {}
    for path, loc in over_locs.items():
        new, node_over, node_merged = [], over, merged
        for part in path:
            if isinstance(part, int) and isinstance(node_over, list) and isinstance(node_merged, list):
                item = node_over[part] if part < len(node_over) else None
                names = [m.get("name") if isinstance(m, dict) else None for m in node_merged]
                if isinstance(item, dict) and item.get("name") in names:
                    part = names.index(item["name"])
                node_over, node_merged = item, node_merged[part] if part < len(node_merged) else None
            elif isinstance(node_over, dict) and part in node_over:
                node_over = node_over[part]
                node_merged = node_merged.get(part) if isinstance(node_merged, dict) else None
            else:
                node_over = node_merged = None
            new.append(part)
        out[tuple(new)] = loc
    return out


def _schema_errors(data: dict, locs: dict) -> list[SourceError]:
    errors = []
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = set(err.schema.get("properties", {}))
            for key in sorted(set(err.instance) - allowed):
                errors.append(SourceError(locate(locs, path + (key,), key=True), path + (key,), f"unknown key {key!r}"))
            continue
        if err.validator == "oneOf":
            message = f"{err.instance!r} must be an integer or a declared size/dim name"
        elif err.validator == "enum":
            message = f"{err.instance!r} is not one of {', '.join(map(repr, err.validator_value))}"
        elif err.validator in ("exclusiveMinimum", "minimum"):
            bound = "greater than" if err.validator == "exclusiveMinimum" else "at least"
            message = f"{err.instance!r} must be {bound} {err.validator_value}"
        elif err.validator == "type":
            message = f"{err.instance!r} has the wrong type: expected {err.validator_value}"
        else:
            message = err.message
        errors.append(SourceError(locate(locs, path), path, message))
    return errors


def _defines(source: str, attrs: list[str]) -> bool:
    """Whether python `source` defines the dotted attribute path `attrs` (top level, then class bodies)."""
    body = ast.parse(source).body
    for i, attr in enumerate(attrs):
        found = None
        for node in body:
            names = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, (ast.AnnAssign,)) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [(a.asname or a.name).split(".")[0] for a in node.names]
            if attr in names:
                found = node
        if found is None:
            return False
        if i < len(attrs) - 1:
            if not isinstance(found, ast.ClassDef):
                return True  # attribute of a non-class object: cannot check statically, accept
            body = found.body
    return True


def _module_source(module: str) -> Path | None:
    """The file of `module`, found without importing it or its parent packages (their __init__ may fail)."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin else Path(".")
    dirs = list(spec.submodule_search_locations or [])
    for i, part in enumerate(rest):
        last = i == len(rest) - 1
        found = None
        for d in dirs:
            pkg, mod = Path(d) / part, Path(d) / f"{part}.py"
            if (pkg / "__init__.py").is_file():
                found = pkg / "__init__.py"
                dirs = [str(pkg)]
                break
            if last and mod.is_file():
                found = mod
                break
        if found is None:
            return None
    return found


def importable(dotted: str) -> str | None:
    """None if `pkg.mod[:Attr.path]` can be imported, else why not. Parses source; imports nothing."""
    module, _, attr = dotted.partition(":")
    origin = _module_source(module)
    if origin is None:
        return f"module {module!r} is not importable"
    if not attr or origin.suffix != ".py":
        return None
    if not _defines(origin.read_text(), attr.split(".")):
        return f"{module!r} has no attribute {attr!r}"
    return None


def _semantic_errors(data: dict, locs: dict) -> list[SourceError]:
    errors: list[SourceError] = []

    def err(path, message, key=False):
        errors.append(SourceError(locate(locs, path, key=key), path, message))

    def unique(items, path, what):
        seen = set()
        for i, item in enumerate(items):
            if item["name"] in seen:
                err(path + (i, "name"), f"duplicate {what} name {item['name']!r}")
            seen.add(item["name"])

    for key in ("dims", "components", "substitutions", "targets"):
        unique(data.get(key, []), (key,), key.rstrip("s"))
    sizes, dims = data.get("sizes", {}), {d["name"]: d for d in data.get("dims", [])}
    for name in set(sizes) & set(dims):
        err(("sizes", name), f"{name!r} is declared both as a size and as a dim", key=True)
    for i, d in enumerate(data.get("dims", [])):
        if not d["min"] <= d["example"] <= d["max"]:
            err(("dims", i, "example"), f"dim {d['name']!r}: need min <= example <= max, got {d['min']} <= {d['example']} <= {d['max']}")
    used = set()
    target_names = {t["name"] for t in data["targets"]}
    for c, comp in enumerate(data["components"]):
        unique(comp["inputs"], ("components", c, "inputs"), "input")
        unique(comp["outputs"], ("components", c, "outputs"), "output")
        for i, inp in enumerate(comp["inputs"]):
            for j, size in enumerate(inp["shape"]):
                if isinstance(size, str):
                    used.add(size)
                    if size not in sizes and size not in dims:
                        err(("components", c, "inputs", i, "shape", j), f"{size!r} is not a declared size or dim")
        for t, name in enumerate(comp.get("targets", [])):
            if name not in target_names:
                err(("components", c, "targets", t), f"unknown target {name!r}")
        problem = importable(comp["adapter"])
        if problem:
            err(("components", c, "adapter"), problem)
    for name in sizes:
        if name not in used:
            err(("sizes", name), f"size {name!r} is declared but no shape uses it", key=True)
    for i, d in enumerate(data.get("dims", [])):
        if d["name"] not in used:
            err(("dims", i, "name"), f"dim {d['name']!r} is declared but no shape uses it")
    seen_ops = set()
    for i, conv in enumerate(data.get("converters", [])):
        if conv["op"] in seen_ops:
            err(("converters", i, "op"), f"duplicate converter for {conv['op']!r}")
        seen_ops.add(conv["op"])
    checks = [(("model", "builder"), data["model"]["builder"])]
    if "loader" in data["model"]["weights"]:
        checks.append((("model", "weights", "loader"), data["model"]["weights"]["loader"]))
    checks += [(("substitutions", i, "with"), s["with"]) for i, s in enumerate(data.get("substitutions", []))]
    checks += [(("substitutions", i, "replace"), s["replace"]) for i, s in enumerate(data.get("substitutions", []))
               if ":" in s["replace"]]
    checks += [(("converters", i, "with"), c["with"]) for i, c in enumerate(data.get("converters", []))]
    checks += [(("targets", i, "pipeline"), t["pipeline"]) for i, t in enumerate(data["targets"])]
    checks += [(("model", "overrides", k), k) for k in data["model"].get("overrides", {})]
    if "predict" in data:
        checks.append((("predict", "app"), data["predict"]["app"]))
    for path, dotted in checks:
        problem = importable(dotted)
        if problem:
            err(path, problem, key=path[-2:] == ("overrides", dotted))
    shipped = [(("model", "vocabulary"), data["model"].get("vocabulary"))]
    e2e = data.get("predict", {}).get("e2e")
    if e2e:
        shipped.append((("predict", "e2e", "image"), e2e["image"]))
        unique(e2e["prompts"], ("predict", "e2e", "prompts"), "prompt")
        for i, prompt in enumerate(e2e["prompts"]):
            if not {"text", "boxes", "points"} & set(prompt):
                err(("predict", "e2e", "prompts", i), "a prompt needs text, boxes or points")
            elif "text" in prompt and "points" in prompt:
                err(("predict", "e2e", "prompts", i, "points"), "points take the interactive path, which has no text")
    for path, ref in shipped:
        if not ref:
            continue
        spec = importlib.util.find_spec(ref["package"])
        if spec is None or not spec.submodule_search_locations:
            err(path + ("package",), f"package {ref['package']!r} is not installed")
        elif not (Path(spec.submodule_search_locations[0]) / ref["file"]).is_file():
            err(path + ("file",), f"{ref['package']!r} ships no file {ref['file']!r}")
    return errors


def load(path: str | Path) -> Manifest:
    """Load and validate; raises ManifestErrors listing every problem found."""
    path = Path(path)
    data, locs = _read(path)
    errors = _schema_errors(data, locs)
    if not errors:
        errors = _semantic_errors(data, locs)
    if errors:
        raise ManifestErrors(errors)
    return Manifest(path=path, data=data, locations=locs)
