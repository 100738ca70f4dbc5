"""Step 3: render templates/*.j2 into generated/<manifest>/: every value a Python literal, never code."""

from __future__ import annotations

import pprint
from pathlib import Path

import jinja2

from sam3spec.plan import Plan


def py(value, indent: int = 0, width: int = 100) -> str:
    """A Python literal for plain data (str, int, float, bool, None, list, dict); anything else is refused."""
    if isinstance(value, (dict, list, tuple)):
        for item in (value.items() if isinstance(value, dict) else enumerate(value)):
            py(item[0]), py(item[1])
    elif not isinstance(value, (str, int, float, bool, type(None))):
        raise TypeError(f"cannot render {type(value).__name__} as a literal")
    text = pprint.pformat(value, width=width - indent, sort_dicts=False)
    return text.replace("\n", "\n" + " " * indent)


def environment(templates: Path) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters["py"] = py
    return env


def render(plan: Plan, root: Path) -> dict[Path, str]:
    """All files for one plan: {path under root: text}."""
    env = environment(root / "templates")
    out_dir = plan.generated_dir(root)
    files = {out_dir / "model.py": env.get_template("model.py.j2").render(plan=plan)}
    for comp in plan.components:
        context = {"plan": plan, "c": comp}
        files[out_dir / comp.name / "export.py"] = env.get_template("export.py.j2").render(**context)
        for target in comp.targets:
            context["t"] = plan.targets[target]
            for kind in ("compile", "verify", "tune"):
                if kind != "tune" or context["t"].get("tuning"):
                    files[out_dir / comp.name / f"{kind}_{target}.py"] = env.get_template(f"{kind}.py.j2").render(
                        **context)
    return files


def differences(files: dict[Path, str], generated: Path, manifests: list[str]) -> list[Path]:
    """Files that differ from, are missing in, or are stale in `generated/` for these manifests."""
    changed = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
    for name in manifests:
        for p in sorted((generated / name).rglob("*")) if (generated / name).is_dir() else []:
            if p.is_file() and p not in files:
                changed.append(p)
    return sorted(set(changed))


def write(files: dict[Path, str], generated: Path, manifests: list[str]) -> list[Path]:
    """Write what changed and remove stale files; returns the paths touched."""
    touched = differences(files, generated, manifests)
    for path in touched:
        if path in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(files[path])
            tmp.replace(path)
        else:
            path.unlink()
    return touched
