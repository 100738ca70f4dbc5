"""YAML → plain data plus the file:line:col of every key and value, rejecting duplicate keys.

Total on any input: every problem, whatever the bytes, is a `SourceError` located at FILE:LINE:COL, found in
bounded time and memory (the limits below), never another exception.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
from yaml.resolver import Resolver

try:  # libyaml's scanner and parser (C), under the bounded composer below; pure Python where absent
    from yaml.cyaml import CParser as _Parser
except ImportError:  # pragma: no cover - pyyaml without libyaml
    from yaml.parser import Parser as _Parser

# Limits: a manifest is ~20 KB and ~1,200 values; these are far above any real one and keep the worst file fast.
MAX_BYTES = 512 * 1024     # file size
MAX_NODES = 20_000         # values (keys, scalars, lists, mappings), counting every expansion of an alias
MAX_DEPTH = 32             # nesting of lists and mappings, aliases expanded
MAX_ALIASES = 1_000        # alias uses (*name)
MAX_NUMBER_CHARS = 100     # characters of one integer or float (Python refuses ints of more than 4300 digits)

TAG = "tag:yaml.org,2002:"
PLAIN = {TAG + "str": "a string", TAG + "int": "an integer", TAG + "float": "a float", TAG + "bool": "a boolean",
         TAG + "null": "null"}
# What a parser refuses (YAML's printable set), and a byte order mark anywhere but the start (libyaml refuses it).
NOT_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFEFE\uFF00-\uFFFD\U00010000-\U0010FFFF]")
LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
BOMS = [(codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF16_LE, "UTF-16"),
        (codecs.BOM_UTF16_BE, "UTF-16")]
SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
UNSAFE_OUTPUT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # what would break or hide a line of output


@dataclass(frozen=True)
class Location:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{_one_line(self.file)}:{self.line}:{self.col}"


class SourceError(Exception):
    """A problem in a source file, located; `str()` gives `FILE:LINE:COL: key.path: message`, one line."""

    def __init__(self, location: Location, path: tuple, message: str):
        super().__init__(message)
        self.location, self.path, self.message = location, tuple(path), message

    def __str__(self) -> str:
        return _one_line(f"{self.location}: {format_path(self.path)}: {self.message}")


class CannotRead(SourceError):
    """The file could not be read at all (missing, a directory, not a regular file, permissions); `reason` says why."""

    def __init__(self, location: Location, reason: str):
        super().__init__(location, (), f"cannot read manifest: {reason}")
        self.reason = reason


def _one_line(text: str) -> str:
    """`text` printable on one line of any terminal: line breaks and control characters escaped, no lone surrogates
    (a file name's undecodable bytes, kept by Python as surrogates, are written as `\\xff`)."""
    try:
        data = str(text).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = str(text).encode("utf-8", "backslashreplace")
    return UNSAFE_OUTPUT.sub(lambda m: repr(m[0])[1:-1], data.decode("utf-8", "backslashreplace"))


def format_path(path: tuple) -> str:
    """`a.b[0].c`; a key that is not a plain word is written `["..."]` (JSON, ASCII), never with ': ' inside."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif SIMPLE_KEY.match(str(part)) and len(str(part)) <= 64:
            text += f".{part}" if text else str(part)
        else:
            part = str(part) if len(str(part)) <= 64 else str(part)[:60] + "..."
            text += "[" + json.dumps(part, ensure_ascii=False).replace(": ", ":\\u0020") + "]"
    return text or "(top level)"


def short(value, limit: int = 60) -> str:
    """repr(value), cut to about `limit` characters."""
    return cut(repr(value), limit)


def cut(text: str, limit: int = 200) -> str:
    """`text`, cut to about `limit` characters."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of `text[index]`, counting line breaks as YAML does."""
    line, start = 1, 0
    for m in LINE_BREAK.finditer(text, 0, index):
        line, start = line + 1, m.end()
    return line, index - start + 1


def _looks_utf16(data: bytes) -> bool:
    head = data[:400]
    return len(head) >= 4 and max(head[0::2].count(0), head[1::2].count(0)) * 4 >= len(head)


def decode(file: str, data: bytes) -> str:
    """UTF-8 bytes → text a YAML parser accepts; otherwise a SourceError at the first bad byte or character."""
    for bom, name in BOMS:
        if data.startswith(bom):
            raise SourceError(Location(file, 1, 1), (), f"{name} text (it starts with a {name} byte order mark): "
                                                        "a manifest must be UTF-8; save it as UTF-8")
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[skip:skip + exc.start].decode("utf-8")
        _printable(file, data, before)  # a NUL or control character before the first bad byte comes first
        line, col = _position(before, len(before))
        hint = "UTF-16 without a byte order mark?" if _looks_utf16(data) else \
            "Latin-1, another 8-bit encoding or binary?"
        raise SourceError(Location(file, line, col), (), f"not UTF-8 text: byte 0x{data[skip + exc.start]:02x} "
                                                         f"({exc.reason}; {hint}): save the file as UTF-8") from None
    _printable(file, data, text)
    return text


def _printable(file: str, data: bytes, text: str) -> None:
    bad = NOT_PRINTABLE.search(text)
    if bad:
        char = bad[0]
        line, col = _position(text, bad.start())
        if char == "\x00":
            what = "UTF-16 text without a byte order mark?" if _looks_utf16(data) else "binary data?"
            message = f"a NUL character ({what}): a manifest must be UTF-8 text; save it as UTF-8"
        elif char == "\ufeff":
            message = "a byte order mark (U+FEFF) after the start: YAML text cannot contain it"
        else:
            message = f"control character U+{ord(char):04X}: YAML text cannot contain it"
        raise SourceError(Location(file, line, col), (), message)


def read(path: str | Path) -> str:
    """The text of the file at `path`, checked as `decode` does; `CannotRead` at FILE:1:1 if it is not readable."""
    file, path = str(path), Path(path)
    where = Location(file, 1, 1)
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise CannotRead(where, "it is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise CannotRead(where, "not a regular file")  # a FIFO or device could block or never end
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise CannotRead(where, exc.strerror or str(exc)) from None
    except ValueError as exc:  # e.g. an embedded NUL in the path
        raise CannotRead(where, str(exc)) from None
    if len(data) > MAX_BYTES:
        raise SourceError(where, (), f"file of more than {MAX_BYTES} bytes ({MAX_BYTES // 1024} KiB): too large "
                                     "for a manifest")
    return decode(file, data)


class _TooBig(Exception):
    def __init__(self, mark, message: str):
        super().__init__(message)
        self.mark, self.message = mark, message


class _BoundedComposer(Composer):
    """pyyaml's composer, refusing input beyond MAX_NODES / MAX_DEPTH / MAX_ALIASES and recursive aliases.

    Each node gets `expanded` (values it stands for, aliases expanded) and `height` (lists and mappings nested in
    it, itself included, aliases expanded); each alias use counts its node's `expanded` values at its depth plus
    the node's height, so that an alias bomb is refused at the alias that crosses a limit, before any expansion.
    """

    def __init__(self):
        Composer.__init__(self)
        self.depth = self.nodes = self.alias_uses = 0
        self.open_anchors: set = set()

    def compose_node(self, parent, index):
        event = self.peek_event()
        mark = event.start_mark
        if isinstance(event, AliasEvent):
            self.alias_uses += 1
            if self.alias_uses > MAX_ALIASES:
                raise _TooBig(mark, f"more than {MAX_ALIASES} aliases (the limit)")
            if event.anchor in self.open_anchors:
                raise _TooBig(mark, f"alias *{event.anchor} is inside the node it names (a recursive alias)")
            node = Composer.compose_node(self, parent, index)
            self._count(mark, node.expanded, self.depth + node.height)
            return node
        collection = isinstance(event, (SequenceStartEvent, MappingStartEvent))
        self._count(mark, 1, self.depth + collection)
        self.depth += collection
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        try:
            node = Composer.compose_node(self, parent, index)
        finally:
            self.depth -= collection
            self.open_anchors.discard(event.anchor)
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else \
            node.value if isinstance(node, yaml.SequenceNode) else []
        node.expanded = 1 + sum(c.expanded for c in children)
        node.height = collection + max((c.height for c in children), default=0)
        return node

    def _count(self, mark, nodes: int, depth: int) -> None:
        self.nodes += nodes
        if self.nodes > MAX_NODES:
            raise _TooBig(mark, f"more than {MAX_NODES} values in the file, aliases expanded (the limit)")
        if depth > MAX_DEPTH:
            raise _TooBig(mark, f"nested more than {MAX_DEPTH} levels deep, aliases expanded (the limit)")


if _Parser is yaml.parser.Parser:  # pragma: no cover - pure Python: its own reader and scanner
    class _Loader(_BoundedComposer, yaml.reader.Reader, yaml.scanner.Scanner, _Parser, SafeConstructor, Resolver):
        def __init__(self, text: str):
            yaml.reader.Reader.__init__(self, text)
            yaml.scanner.Scanner.__init__(self)
            _Parser.__init__(self)
            _BoundedComposer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
else:
    class _Loader(_BoundedComposer, _Parser, SafeConstructor, Resolver):  # the composer's methods win over C's
        def __init__(self, text: str):
            _Parser.__init__(self, text)
            _BoundedComposer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)


def _loc(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _mark_loc(file: str, mark) -> Location:
    return Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)


def load(file: str, text: str) -> tuple[object, dict[tuple, Location]]:
    """Parse one YAML document; returns (data, locations) where locations maps key paths to places.

    `locations[path]` is where the value at `path` starts; `locations[path + ("<key>",)]` is where the
    last key of `path` is written (what an "unknown key" error points at). Data is plain: dicts with string
    keys, lists, str, int, float, bool, None.
    """
    _printable(file, b"", text)  # what `decode` checks, for text from elsewhere
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except _TooBig as exc:
        raise SourceError(_mark_loc(file, exc.mark), (), exc.message) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context
        where = f", line {exc.context_mark.line + 1}" if exc.context_mark else ""
        if "nesting depth" in str(exc.problem):  # libyaml's own limit (1000), met before the composer's
            message = f"nested more than {MAX_DEPTH} levels deep (the limit)"
            raise SourceError(_mark_loc(file, mark), (), message) from None
        if exc.problem == "second occurrence" and str(exc.context).endswith("; first occurrence"):
            message = f"{exc.context[:-len('; first occurrence')]} (first{where})"
        elif exc.problem and exc.context:
            message = f"{exc.problem} ({exc.context}{where})"
        raise SourceError(_mark_loc(file, mark), (), f"YAML syntax error: {message}") from None
    except yaml.YAMLError as exc:
        raise SourceError(Location(file, 1, 1), (), f"YAML error: {exc}") from None
    finally:
        loader.dispose()
    if node is None:
        raise SourceError(Location(file, 1, 1), (), "empty file: expected a mapping")
    constructor = SafeConstructor()
    locations: dict[tuple, Location] = {}

    def scalar(n: yaml.Node, path: tuple):
        if not isinstance(n, yaml.ScalarNode):
            kind = "mapping" if isinstance(n, yaml.MappingNode) else "list"
            raise SourceError(_loc(file, n), path, f"keys must be strings, not a {kind}")
        if n.tag == TAG + "value":  # a plain `=`
            return n.value
        if n.tag not in PLAIN:
            if n.tag == TAG + "timestamp":
                message = f"{short(n.value)} reads as a date: quote it to make it a string"
            elif n.tag == TAG + "merge":
                message = "merge keys (<<) are not supported: write the keys, or use extends"
            else:
                message = f"tag {short(n.tag)} is not allowed: a manifest holds strings, numbers, booleans and null"
            raise SourceError(_loc(file, n), path, message)
        if n.tag in (TAG + "int", TAG + "float") and len(n.value) > MAX_NUMBER_CHARS:
            raise SourceError(_loc(file, n), path, f"a number of {len(n.value)} characters: out of range (a "
                                                   f"number may have at most {MAX_NUMBER_CHARS})")
        try:
            return constructor.construct_object(n, deep=True)
        except Exception as exc:  # explicit tags on bad text: `!!int x`, `!!bool maybe`
            why = f": {cut(str(exc), 100)}" if isinstance(exc, ValueError) else ""
            raise SourceError(_loc(file, n), path, f"cannot read {short(n.value)} as {PLAIN[n.tag]}{why}") from None

    def build(n: yaml.Node, path: tuple):
        locations[path] = _loc(file, n)
        if isinstance(n, yaml.MappingNode):
            out = {}
            for key_node, value_node in n.value:
                key = scalar(key_node, path)
                if not isinstance(key, str):
                    raise SourceError(_loc(file, key_node), path, f"keys must be strings: {short(key_node.value)} "
                                                                  f"reads as {short(key)}; quote it")
                if key in out:
                    raise SourceError(_loc(file, key_node), path + (key,), f"duplicate key {short(key)}")
                locations[path + (key, "<key>")] = _loc(file, key_node)
                out[key] = build(value_node, path + (key,))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(item, path + (i,)) for i, item in enumerate(n.value)]
        return scalar(n, path)

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
