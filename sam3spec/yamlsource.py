"""YAML → plain data plus the file:line:col of every key and value, rejecting duplicate keys."""

from __future__ import annotations

from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class Location:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class SourceError(Exception):
    """A problem in a source file, located; `str()` gives `FILE:LINE:COL: key.path: message`."""

    def __init__(self, location: Location, path: tuple, message: str):
        super().__init__(message)
        self.location, self.path, self.message = location, tuple(path), message

    def __str__(self) -> str:
        return f"{self.location}: {format_path(self.path)}: {self.message}"


def format_path(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _loc(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


def load(file: str, text: str) -> tuple[object, dict[tuple, Location]]:
    """Parse one YAML document; returns (data, locations) where locations maps key paths to places.

    `locations[path]` is where the value at `path` starts; `locations[path + ("<key>",)]` is where the
    last key of `path` is written (what an "unknown key" error points at).
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        raise SourceError(where, (), f"YAML syntax error: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SourceError(Location(file, 1, 1), (), f"YAML error: {exc}") from None
    if node is None:
        raise SourceError(Location(file, 1, 1), (), "empty file: expected a mapping")
    constructor = yaml.SafeLoader("")
    locations: dict[tuple, Location] = {}

    def build(n: yaml.Node, path: tuple):
        locations[path] = _loc(file, n)
        if isinstance(n, yaml.MappingNode):
            out = {}
            for key_node, value_node in n.value:
                key = constructor.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise SourceError(_loc(file, key_node), path, f"keys must be strings, got {key!r}")
                if key in out:
                    raise SourceError(_loc(file, key_node), path + (key,), f"duplicate key {key!r}")
                locations[path + (key, "<key>")] = _loc(file, key_node)
                out[key] = build(value_node, path + (key,))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(item, path + (i,)) for i, item in enumerate(n.value)]
        return constructor.construct_object(n, deep=True)

    data = build(node, ())
    if not isinstance(data, dict):
        raise SourceError(locations[()], (), f"the top level must be a mapping, not {type(data).__name__}")
    return data, locations


def locate(locations: dict[tuple, Location], path: tuple, key: bool = False) -> Location:
    """The place of `path` (its key when `key`), or of its nearest located ancestor."""
    path = tuple(path)
    if key and path + ("<key>",) in locations:
        return locations[path + ("<key>",)]
    while path not in locations and path:
        path = path[:-1]
    return locations.get(path, next(iter(locations.values())))
