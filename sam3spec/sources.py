"""Python source found and read without importing anything: whether a name a manifest gives exists (validation),
and the files a step runs (the step cache): a named module's file (a package: every file in it) and,
following its `import` statements, the files of its own package that it imports."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
from pathlib import Path

from sam3spec.yamlsource import cut


def _defines(source: str | ast.Module, attrs: list[str]) -> bool:
    """Whether python `source` defines the dotted attribute path `attrs` (top level, then class bodies)."""
    body = (source if isinstance(source, ast.Module) else ast.parse(source)).body
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


def module_source(module: str) -> Path | None:
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


@functools.lru_cache(maxsize=256)
def _parsed(origin: Path, mtime_ns: int) -> ast.Module | str:
    """The module at `origin`, parsed (cached by modification time), or why it cannot be."""
    try:
        return ast.parse(origin.read_bytes(), str(origin))
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return f"{type(exc).__name__}: {cut(str(exc), 100)}"


def importable(dotted: str) -> str | None:
    """None if `pkg.mod[:Attr.path]` can be imported, else why not. Parses source; imports nothing."""
    module, _, attr = dotted.partition(":")
    try:
        origin = module_source(module)
    except Exception:  # noqa: BLE001 - an odd name or a broken finder: treated as absent
        origin = None
    if origin is None:
        return f"module {module!r} is not importable"
    if not attr or origin.suffix != ".py":
        return None
    try:
        tree = _parsed(origin, origin.stat().st_mtime_ns)
    except (OSError, ValueError) as exc:
        tree = str(exc)
    if isinstance(tree, str):
        return f"module {module!r} cannot be parsed ({tree})"
    if not _defines(tree, attr.split(".")):
        return f"{module!r} has no attribute {attr!r}"
    return None


@functools.lru_cache(maxsize=None)
def _imports(path: Path) -> tuple[str, ...]:
    """Every module name an `import` / `from ... import` in `path` names (absolute; `from a import b` also
    yields `a.b`, which may be a submodule). Imports inside functions count: they run when the code does."""
    names = []
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")  # relative: resolved by _absolute
            names.append(base)
            names += [f"{base}.{alias.name}" if base.strip(".") else base + alias.name for alias in node.names]
    return tuple(names)


def _absolute(name: str, module: str, is_package: bool) -> str:
    """`name` from an import in `module`, relative dots resolved."""
    if not name.startswith("."):
        return name
    level = len(name) - len(name.lstrip("."))
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[:len(parts) - (level - 1)] if level > 1 else parts
    rest = name.lstrip(".")
    return ".".join(parts + ([rest] if rest else []))


def module_files(module: str, whole: bool = False) -> list[Path]:
    """The file of `module` (a package: its __init__.py; with `whole`, every .py file under it, for a package
    served in place of another)."""
    origin = module_source(module)
    if origin is None or origin.suffix != ".py":
        return []
    if whole and origin.name == "__init__.py":
        return sorted(origin.parent.rglob("*.py"))
    return [origin]


def closure(modules: list[str], whole: bool = False) -> list[Path]:
    """The files of `modules` (`whole`: every file of a package) and of every module of the same top-level
    package that they import, directly or not, sorted. Other packages (torch, tvm, sam3) are left to their
    versions."""
    seen: dict[Path, None] = {}
    pending = [(m, m.split(".")[0], whole) for m in modules]
    visited = set()
    while pending:
        module, top, entire = pending.pop()
        if module in visited:
            continue
        visited.add(module)
        for path in module_files(module, entire):
            if path in seen:
                continue
            seen[path] = None
            name = _module_name(module, path)
            for imported in _imports(path):
                imported = _absolute(imported, name, path.name == "__init__.py")
                if imported.split(".")[0] == top and module_source(imported) is not None:
                    pending.append((imported, top, False))
    return sorted(seen)


def _module_name(module: str, path: Path) -> str:
    """The dotted name of `path`, a file of `module` (itself, or one inside the package `module`)."""
    origin = module_source(module)
    if origin is None or path == origin or origin.name != "__init__.py":
        return module
    rel = path.relative_to(origin.parent).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([module, *parts])


@functools.lru_cache(maxsize=None)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digest(paths: list[Path]) -> str:
    """One sha256 over the files' contents (each file's own hash and name, in order)."""
    h = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        h.update(f"{path.name}\0{_file_digest(path, stat.st_size, stat.st_mtime_ns)}\0".encode())
    return h.hexdigest()
