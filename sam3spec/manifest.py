"""Step 1: load a manifest (following `extends`), check it against the JSON Schema and the semantic rules.

Every problem is a `SourceError` located at FILE:LINE:COL; `load` raises `ManifestErrors` with all of them, for
any file whatever its bytes (see yamlsource's limits), and nothing else. Nothing here writes files or imports the
modules a manifest names (their source is parsed instead).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import itertools
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jsonschema

from sam3spec.sources import importable
from sam3spec.yamlsource import CannotRead, Location, SourceError, cut, load as load_yaml, locate, short
from sam3spec.yamlsource import read as read_source

SCHEMA = json.loads(resources.files("sam3spec.schema").joinpath("manifest.schema.json").read_text())
NAMED_LISTS = ("dims", "components", "substitutions", "targets", "inputs", "outputs", "converters")
KEYED_BY = {"converters": "op"}   # the field that names a list's items, where it is not `name`
MAX_EXTENDS = 8    # manifests in one extends chain
MAX_ERRORS = 50    # errors reported per manifest; the rest are counted
MAX_SCHEMA_ERRORS = 4 * MAX_ERRORS  # schema violations looked for: 18,000 bad shape entries take seconds


def _is_integer(checker, instance) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)  # 2.0 is not an integer size or seed


VALIDATOR = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer))(SCHEMA)


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
    """`over` on top of `base`: mappings merge by key (a key set to null is removed, as in JSON Merge Patch),
    lists of named mappings by `name`, the rest replace."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            if value is None and key in base:
                del out[key]
            else:
                out[key] = _merge(base.get(key), value, path + (key,)) if key in base else value
        return out
    key = KEYED_BY.get(path[-1], "name") if path else "name"
    if (isinstance(base, list) and isinstance(over, list) and path and path[-1] in NAMED_LISTS
            and all(isinstance(i, dict) and isinstance(i.get(key), str) for i in base + over)):
        out = [copy.deepcopy(i) for i in base]
        index = {item[key]: i for i, item in enumerate(out)}
        for item in over:
            if item[key] in index:
                out[index[item[key]]] = _merge(out[index[item[key]]], item)
            else:
                out.append(item)
        return out
    return over


def _read(path: Path, chain: tuple = ()) -> tuple[dict, dict]:
    """Read one file and, through `extends`, its ancestors; returns merged data and locations.

    `chain` holds (resolved path, location of its `extends`) for each file that extends this one, nearest last.
    """
    try:
        data, locs = load_yaml(str(path), read_source(path))
    except CannotRead as exc:
        if chain:  # a parent that cannot be read: the error is the child's `extends`
            exc = SourceError(chain[-1][1], ("extends",), f"cannot read {short(str(path), 100)}: {exc.reason}")
        raise ManifestErrors([exc]) from None
    except SourceError as exc:
        raise ManifestErrors([exc]) from None
    parent = data.get("extends")
    if parent is None:
        if "overlays" in data:
            raise ManifestErrors([SourceError(locate(locs, ("overlays",), key=True), ("overlays",),
                                              "overlays need an extends: they apply on top of the parent")])
        return data, locs
    where = locate(locs, ("extends",))

    def fail(message):
        raise ManifestErrors([SourceError(where, ("extends",), message)])

    if not isinstance(parent, str) or not parent.strip():
        fail("must be a path string" if not isinstance(parent, str) else "must be a path, not an empty string")
    if len(chain) + 1 >= MAX_EXTENDS:
        fail(f"more than {MAX_EXTENDS} manifests extend one another (the limit)")
    parent_path = path.parent / parent
    try:
        me, target = path.resolve(), parent_path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        fail(f"cannot read {short(parent, 100)}: {exc}")
    if target == me:
        fail("extends itself (cycle)")
    if target in [p for p, _ in chain]:
        fail(f"extends {short(parent, 100)}, which extends this file (cycle)")
    base, base_locs = _read(parent_path, chain + ((me, where),))
    base.pop("extends", None)
    base.pop("overlays", None)
    all_locs = dict(base_locs)
    for overlay, overlay_locs in _overlays(path, data, locs):
        base = _merge(base, overlay)
        all_locs.update(_relocate(overlay, overlay_locs, base))
    data = {k: v for k, v in data.items() if k != "overlays"}
    merged = _merge(base, data)
    # Locations: the derived file wins wherever it says something; merged list items are re-keyed by index.
    all_locs.update(_relocate(data, locs, merged))
    return merged, all_locs


def _overlays(path: Path, data: dict, locs: dict) -> list[tuple[dict, dict]]:
    """The files `overlays` names, each as written (its own keys, not what it extends): a variant's changes
    (sam3-image-tiny's reductions) applied to another parent (sam3-video) without copying them."""
    def fail(key: tuple, message: str):
        raise ManifestErrors([SourceError(locate(locs, key), key, message)]) from None

    names = data.get("overlays", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        fail(("overlays",), "must be a list of manifest paths")
    out = []
    for i, name in enumerate(names):
        try:
            overlay, overlay_locs = load_yaml(str(path.parent / name), read_source(path.parent / name))
        except (CannotRead, SourceError) as exc:
            fail(("overlays", i), f"cannot read {short(name, 100)}: "
                                  f"{exc.reason if isinstance(exc, CannotRead) else exc}")
        if not isinstance(overlay, dict):
            fail(("overlays", i), f"{short(name, 100)} is not a mapping")
        if "overlays" in overlay:
            fail(("overlays", i), f"{short(name, 100)} has overlays of its own: one level only")
        out.append(({k: v for k, v in overlay.items() if k not in ("extends", "name", "description")},
                    overlay_locs))
    return out


def _relocate(over: dict, over_locs: dict, merged: dict) -> dict:
    """Map locations of `over`'s named-list items to their indices in `merged`."""
    out, index_of = {}, {}  # index_of: id(merged list) -> {name: first index}
    for path, loc in over_locs.items():
        new, node_over, node_merged = [], over, merged
        for part in path:
            if isinstance(part, int) and isinstance(node_over, list) and isinstance(node_merged, list):
                item = node_over[part] if part < len(node_over) else None
                key = KEYED_BY.get(new[-1], "name") if new else "name"
                if node_merged is not node_over:  # merged by name, not replaced
                    if id(node_merged) not in index_of:
                        names = index_of[id(node_merged)] = {}
                        for j, m in enumerate(node_merged):
                            if isinstance(m, dict) and isinstance(m.get(key), str):
                                names.setdefault(m[key], j)
                    name = item.get(key) if isinstance(item, dict) else None
                    part = index_of[id(node_merged)].get(name, part) if isinstance(name, str) else part
                node_over, node_merged = item, node_merged[part] if part < len(node_merged) else None
            elif isinstance(node_over, dict) and part in node_over:
                node_over = node_over[part]
                node_merged = node_merged.get(part) if isinstance(node_merged, dict) else None
            else:
                node_over = node_merged = None
            new.append(part)
        out[tuple(new)] = loc
    return out


def _nonfinite_errors(data, locs: dict, path: tuple = ()) -> list[SourceError]:
    """One rule for every number read anywhere: it is finite. A tolerance of .inf can never fail, .nan never pass."""
    if isinstance(data, float) and not math.isfinite(data):
        text = ".nan" if math.isnan(data) else ".inf" if data > 0 else "-.inf"
        return [SourceError(locate(locs, path), path, f"{text} is not a finite number: every number in a "
                                                      "manifest must be finite")]
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    return [e for key, value in items for e in _nonfinite_errors(value, locs, path + (key,))]


def _schema_message(err) -> str:
    value, bound = short(err.instance), err.validator_value
    if err.validator == "oneOf":
        if isinstance(err.instance, int) and not isinstance(err.instance, bool):  # a shape entry: say which bound
            for sub in err.context or ():
                if sub.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                    return _schema_message(sub)
        return f"{value} must be an integer or a declared size/dim name"
    if err.validator == "enum":
        return f"{value} is not one of {', '.join(map(repr, bound))}"
    if err.validator in ("exclusiveMinimum", "minimum", "exclusiveMaximum", "maximum"):
        word = {"exclusiveMinimum": "greater than", "minimum": "at least", "exclusiveMaximum": "less than",
                "maximum": "at most"}[err.validator]
        return f"{value} must be {word} {bound}"
    if err.validator == "type":
        return f"{value} has the wrong type: expected {bound}"
    if err.validator == "const":
        return f"{value} must be {bound!r}"
    if err.validator == "pattern":
        return f"{value} does not match {bound}"
    if err.validator in ("minItems", "maxItems"):
        return f"{'at least' if err.validator == 'minItems' else 'at most'} {bound} items, not {len(err.instance)}"
    if err.validator in ("minLength", "maxLength"):
        word = "at least" if err.validator == "minLength" else "at most"
        return f"{value} has {len(err.instance)} characters: {word} {bound}"
    return cut(err.message)


def _schema_errors(data: dict, locs: dict) -> tuple[list[SourceError], bool]:
    """The schema's complaints, located, and whether there were more than MAX_SCHEMA_ERRORS (the rest not sought)."""
    errors = []
    found = list(itertools.islice(VALIDATOR.iter_errors(data), MAX_SCHEMA_ERRORS + 1))
    for err in sorted(found[:MAX_SCHEMA_ERRORS], key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = set(err.schema.get("properties", {}))
            for key in sorted(set(err.instance) - allowed):
                errors.append(SourceError(locate(locs, path + (key,), key=True), path + (key,),
                                          f"unknown key {short(key)}"))
            continue
        if "propertyNames" in err.relative_schema_path and isinstance(err.instance, str):  # a bad key: point at it
            path += (err.instance,)
            errors.append(SourceError(locate(locs, path, key=True), path, f"key {_schema_message(err)}"))
            continue
        errors.append(SourceError(locate(locs, path), path, _schema_message(err)))
    return errors, len(found) > MAX_SCHEMA_ERRORS


MASK_SAMPLES = ("padding", "prompt_padding")


def _sample_problem(inp: dict, sizes: dict, dims: dict) -> str | None:
    """Why an input's `sample` cannot make it (a mask sample for a non-bool input, a text part as long as the
    mask or longer), or None."""
    kind = inp.get("sample", {}).get("kind")
    if kind in MASK_SAMPLES and inp["dtype"] != "bool":
        return f"sample kind {kind!r} makes a bool mask; {inp['name']!r} is {inp['dtype']}"
    if kind == "prompt_padding" and inp["shape"]:
        last = inp["shape"][-1]
        shortest = sizes.get(last) if last in sizes else dims[last]["min"] if last in dims else last
        if isinstance(shortest, int) and inp["sample"].get("text", 0) >= shortest:
            return f"prompt_padding: text {inp['sample'].get('text')} must be shorter than the mask ({last!r}: {shortest})"
    return None


def _semantic_errors(data: dict, locs: dict) -> list[SourceError]:
    errors: list[SourceError] = []
    check_import = functools.lru_cache(maxsize=None)(importable)  # many targets may name one pipeline

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
            problem = _sample_problem(inp, sizes, dims)
            if problem:
                err(("components", c, "inputs", i, "sample"), problem)
        for t, name in enumerate(comp.get("targets", [])):
            if name not in target_names:
                err(("components", c, "targets", t), f"unknown target {name!r}")
        problem = check_import(comp["adapter"])
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
    if "view" in data["model"]:
        checks.append((("model", "view"), data["model"]["view"]))
    if "loader" in data["model"]["weights"]:
        checks.append((("model", "weights", "loader"), data["model"]["weights"]["loader"]))
    checks += [(("substitutions", i, "with"), s["with"]) for i, s in enumerate(data.get("substitutions", []))]
    checks += [(("substitutions", i, "replace"), s["replace"]) for i, s in enumerate(data.get("substitutions", []))
               if ":" in s["replace"]]
    checks += [(("converters", i, "with"), c["with"]) for i, c in enumerate(data.get("converters", []))]
    checks += [(("targets", i, "pipeline"), t["pipeline"]) for i, t in enumerate(data["targets"])]
    checks += [(("model", "overrides", k), k) for k in data["model"].get("overrides", {})]
    for section in ("predict", "track"):
        if section in data:
            checks.append(((section, "app"), data[section]["app"]))
    for path, dotted in checks:
        problem = check_import(dotted)
        if problem:
            err(path, problem, key=path[-2:] == ("overrides", dotted))
    shipped = [(("model", "vocabulary"), data["model"].get("vocabulary"))]
    for section, image in (("predict", ("image",)), ("track", ("clip", "image"))):
        e2e = (data.get(section) or {}).get("e2e")
        if not e2e:
            continue
        shipped.append(((section, "e2e") + image, e2e[image[0]] if len(image) == 1 else e2e["clip"]["image"]))
        unique(e2e["prompts"], (section, "e2e", "prompts"), "prompt")
        for i, prompt in enumerate(e2e["prompts"]):
            if not {"text", "boxes", "points"} & set(prompt):
                err((section, "e2e", "prompts", i), "a prompt needs text, boxes or points")
            elif "points" in prompt and ({"text", "boxes"} & set(prompt) if section == "track" else "text" in prompt):
                err((section, "e2e", "prompts", i, "points"),
                    "a click prompts the tracker alone: no text or box with it" if section == "track" else
                    "points take the interactive path, which has no text")
    for path, ref in shipped:
        if not ref:
            continue
        try:  # a top-level name (schema pattern): found without importing anything
            spec = importlib.util.find_spec(ref["package"])
        except Exception:  # noqa: BLE001
            spec = None
        if spec is None or not spec.submodule_search_locations:
            err(path + ("package",), f"package {ref['package']!r} is not installed")
        elif not _is_file(Path(spec.submodule_search_locations[0]) / ref["file"]):
            err(path + ("file",), f"{ref['package']!r} ships no file {short(ref['file'])}")
    return errors


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, an embedded NUL
        return False


def load(path: str | Path) -> Manifest:
    """Load and validate; raises ManifestErrors listing every problem found (at most MAX_ERRORS, then a count).

    Whatever the file holds, ManifestErrors is the only exception: a failure of the checks themselves is
    reported as an internal error located at the file, not as a traceback.
    """
    path = Path(path)
    try:
        data, locs = _read(path)
        errors = _nonfinite_errors(data, locs)
        said = {e.path for e in errors}
        schema_errors, more = _schema_errors(data, locs)
        errors += [e for e in schema_errors if e.path not in said]
        if not errors:
            errors = _semantic_errors(data, locs)
    except ManifestErrors:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug here must not become a traceback for a user
        raise ManifestErrors([SourceError(Location(str(path), 1, 1), (), f"internal error while validating (a bug "
                                          f"in sam3spec): {type(exc).__name__}: {cut(str(exc))}")]) from exc
    if len(errors) > MAX_ERRORS:
        rest = errors[MAX_ERRORS:]
        count = f"at least {len(rest)}" if more else str(len(rest))
        errors = errors[:MAX_ERRORS] + [SourceError(rest[0].location, (), f"{count} more errors not shown")]
    if errors:
        raise ManifestErrors(errors)
    return Manifest(path=path, data=data, locations=locs)
