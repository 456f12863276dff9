"""Strict YAML/JSON reading for user files: bounded, duplicate-free, one-line errors.

PyYAML's loaders accept what a formal tool must not: a repeated key silently wins, aliases
expand without bound ("billion laughs"), deep nesting overflows the stack (the C composer
crashes the process), tags build dates and sets, and a bad `!!int` raises a bare
ValueError. This module builds the document itself from the parser's event stream (the
libyaml C parser where PyYAML has it), iteratively, so each of those becomes a
`DocumentError` that names the key path and the line.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from yaml import events as ev
from yaml.nodes import ScalarNode

_Loader: type[yaml.SafeLoader]
try:
    _Loader = yaml.CSafeLoader  # type: ignore[assignment]
    C_PARSER = True
except AttributeError:  # PyYAML built without libyaml
    _Loader = yaml.SafeLoader
    C_PARSER = False

MAX_BYTES = 64 * 2**20  # a scenario or vector file is hand-written or generated: 64 MiB is ample
MAX_DEPTH = 64  # the deepest real document nests 6 levels
MAX_ALIAS_NODES = 100_000  # nodes that aliases may add by repeating anchored content

STR, INT, FLOAT, BOOL, NULL = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool",
                                                                   "null"))
SEQ, MAP, MERGE = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map", "tag:yaml.org,2002:merge"
_SCALAR_TAGS = {STR, INT, FLOAT, BOOL, NULL}


class DocumentError(ValueError):
    """A file is not an acceptable document; `path` is the key path, `line` 1-based or 0."""

    def __init__(self, path: str, message: str, line: int = 0) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = path or (f"line {line}" if line else "")
        if path and line:
            where = f"{path} (line {line})"
        super().__init__(f"{where}: {message}" if where else message)


def join(path: str, key: Any) -> str:
    """`a.b` / `a[3]` key paths; odd keys are shown as their repr so they stay one line."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    text = key if isinstance(key, str) and key.isprintable() and key else repr(key)
    return f"{path}.{text}" if path else text


def decode(data: bytes) -> str:
    """UTF-8 text (a BOM allowed); anything else names the offending byte offset."""
    if b"\0" in data[:8192]:
        kind = "UTF-16/32 text" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "binary data"
        raise DocumentError("", f"{kind}, not UTF-8 text (NUL byte at offset "
                                f"{data.index(0)}); save the file as UTF-8")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DocumentError("", "UTF-16 text, not UTF-8; save the file as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError("", f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset "
                                f"{exc.start}; save the file as UTF-8") from None


def read(path: str | Path) -> str:
    """A file's text, refusing directories, huge files and non-UTF-8 bytes in one line."""
    p = Path(path)
    try:
        if p.is_dir():
            raise DocumentError("", "cannot read: is a directory, not a file")
        with p.open("rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise DocumentError("", f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise DocumentError("", f"larger than {MAX_BYTES // 2**20} MiB; not a scenario-sized "
                                "file")
    return decode(data)


def load_path(path: str | Path) -> Any:
    """Read a file and parse it: JSON by the .json suffix, YAML otherwise."""
    text = read(path)
    return load_json(text) if Path(path).suffix == ".json" else load_yaml(text)


def _no_constant(name: str) -> float:
    raise DocumentError("", f"{name} is not a JSON number")


def load_json(text: str) -> Any:
    """Strict JSON: duplicate keys and NaN/Infinity refused, nesting bounded."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise DocumentError(join("", k), "duplicate key (a JSON object repeats it)")
            out[k] = v
        return out

    depth = cur = 0
    in_str = esc = False
    for ch in text:  # bracket depth outside strings, before the recursive decoder runs
        if in_str:
            esc, in_str = (False, True) if esc else (ch == "\\", ch != '"')
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            cur += 1
            depth = max(depth, cur)
        elif ch in "]}":
            cur -= 1
    if depth > MAX_DEPTH:
        raise DocumentError("", f"nested more than {MAX_DEPTH} levels deep")
    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise DocumentError("", f"not valid JSON: {exc.msg}", exc.lineno) from None


class _Frame:
    """A collection being built: its value, path, pending key, anchor, alias-free size."""

    __slots__ = ("anchor", "key", "key_line", "keys", "line", "merges", "path", "size",
                 "value")

    def __init__(self, value: Any, path: str, anchor: str | None, line: int) -> None:
        self.value = value
        self.path = path
        self.anchor = anchor
        self.line = line
        self.key: Any = _NO_KEY
        self.key_line = 0
        self.keys: set[Any] = set()
        self.merges: list[Any] = []
        self.size = 1


_NO_KEY = object()


def _short(path: str) -> str:
    """A deep key path cut to its first 60 characters."""
    return path if len(path) <= 64 else path[:60] + "..."


def _line(e: ev.Event) -> int:
    mark = e.start_mark
    return int(mark.line) + 1 if mark is not None else 0


class _Builder:
    """Turns parser events into plain dicts/lists/scalars with every bound checked."""

    def __init__(self, text: str) -> None:
        self.loader = _Loader(text)
        self.anchors: dict[str, tuple[Any, int, bool]] = {}  # value, size, still open
        self.open: set[str] = set()
        self.alias_nodes = 0
        self.stack: list[_Frame] = []
        self.memo: dict[tuple[str, Any, str | None], Any] = {}

    def path(self) -> str:
        if not self.stack:
            return ""
        top = self.stack[-1]
        if isinstance(top.value, list):
            return join(top.path, len(top.value))
        if top.key is _NO_KEY:
            return top.path
        return join(top.path, top.key)

    def scalar(self, e: ev.ScalarEvent) -> Any:
        memo_key = (e.value, e.implicit, e.tag)
        if memo_key in self.memo:  # scalars are immutable: repeated ones are built once
            return self.memo[memo_key]
        implicit = e.tag is None or e.tag == "!"
        tag: str = (self.loader.resolve(ScalarNode, e.value, e.implicit)  # type: ignore[no-untyped-call]
                    if implicit or e.tag is None else e.tag)
        if tag == MERGE:
            top = self.stack[-1] if self.stack else None
            if top is not None and isinstance(top.value, dict) and top.key is _NO_KEY:
                return _MERGE_KEY
            tag = STR
        if tag not in _SCALAR_TAGS:
            shown = tag.replace("tag:yaml.org,2002:", "!!")
            hint = (f"YAML reads {e.value!r} as {shown}; quote it if you meant a string"
                    if implicit else f"YAML tag {shown} is not accepted here (only strings, "
                    "numbers, booleans and null)")
            raise DocumentError(self.path(), hint, _line(e))
        node = ScalarNode(tag, e.value, style=e.style)
        try:
            value = self.loader.yaml_constructors[tag](self.loader, node)
        except (ValueError, TypeError, yaml.YAMLError):
            shown = tag.replace("tag:yaml.org,2002:", "!!")
            raise DocumentError(self.path(), f"{e.value!r} is not a valid {shown}",
                                _line(e)) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise DocumentError(self.path(), f"{e.value!r}: NaN and infinity are not accepted",
                                _line(e))
        if len(self.memo) < 65536 and e.value != "<<":
            self.memo[memo_key] = value
        return value

    def add(self, value: Any, size: int, line: int) -> Any:
        """Place a finished value in its parent; returns it when it is the document root."""
        if not self.stack:
            return value
        top = self.stack[-1]
        top.size += size
        if isinstance(top.value, list):
            top.value.append(value)
            return _NO_KEY
        if top.key is _NO_KEY:
            if value is _MERGE_KEY:
                top.key = _MERGE_KEY
                top.key_line = line
                return _NO_KEY
            if isinstance(value, (dict, list)):
                raise DocumentError(top.path, "a mapping or list cannot be a key", line)
            if value in top.keys:
                raise DocumentError(join(top.path, value), "duplicate key (already given "
                                    "above in the same mapping)", line)
            top.keys.add(value)
            top.key = value
            top.key_line = line
            return _NO_KEY
        if top.key is _MERGE_KEY:
            merged = value if isinstance(value, list) else [value]
            if not all(isinstance(m, dict) for m in merged):
                raise DocumentError(join(top.path, "<<"), "a merge key (<<) takes a mapping "
                                    "or a list of mappings", top.key_line)
            top.merges.extend(merged)
        else:
            top.value[top.key] = value
        top.key = _NO_KEY
        return _NO_KEY

    def start(self, e: ev.CollectionStartEvent, value: Any) -> None:
        if len(self.stack) >= MAX_DEPTH:
            raise DocumentError(_short(self.path()), f"nested more than {MAX_DEPTH} levels deep",
                                _line(e))
        if e.tag is not None and e.tag not in ("!", SEQ, MAP):
            shown = e.tag.replace("tag:yaml.org,2002:", "!!")
            raise DocumentError(self.path(), f"YAML tag {shown} is not accepted here",
                                _line(e))
        frame = _Frame(value, self.path(), e.anchor, _line(e))
        self.stack.append(frame)
        if e.anchor is not None:
            self.open.add(e.anchor)

    def end(self) -> Any:
        frame = self.stack.pop()
        value = frame.value
        if isinstance(value, dict) and frame.merges:
            for extra in reversed(frame.merges):  # YAML merge: explicit keys win, then order
                for k, v in extra.items():
                    value.setdefault(k, v)
        if frame.anchor is not None:
            self.open.discard(frame.anchor)
            self.anchors[frame.anchor] = (value, frame.size, False)
        return self.add(value, frame.size, frame.line)

    def alias(self, e: ev.AliasEvent) -> Any:
        if e.anchor in self.open:
            raise DocumentError(self.path(), f"alias *{e.anchor} refers to itself", _line(e))
        if e.anchor not in self.anchors:
            raise DocumentError(self.path(), f"alias *{e.anchor} has no anchor before it",
                                _line(e))
        value, size, _ = self.anchors[e.anchor]
        self.alias_nodes += size
        if self.alias_nodes > MAX_ALIAS_NODES:
            raise DocumentError(self.path(), f"aliases expand to more than {MAX_ALIAS_NODES} "
                                "nodes (an alias bomb?)", _line(e))
        return self.add(value, size, _line(e))

    def build(self) -> Any:
        root: Any = None
        seen_doc = False
        get: Callable[[], ev.Event | None] = self.loader.get_event
        while (e := get()) is not None:
            if isinstance(e, ev.DocumentStartEvent):
                if seen_doc:
                    raise DocumentError("", "more than one YAML document (---) in the file",
                                        _line(e))
                seen_doc = True
            elif isinstance(e, ev.ScalarEvent):
                value = self.scalar(e)
                if e.anchor is not None:
                    self.anchors[e.anchor] = (value, 1, False)
                got = self.add(value, 1, _line(e))
                if got is not _NO_KEY:
                    root = got
            elif isinstance(e, ev.SequenceStartEvent):
                self.start(e, [])
            elif isinstance(e, ev.MappingStartEvent):
                self.start(e, {})
            elif isinstance(e, (ev.SequenceEndEvent, ev.MappingEndEvent)):
                got = self.end()
                if got is not _NO_KEY:
                    root = got
            elif isinstance(e, ev.AliasEvent):
                got = self.alias(e)
                if got is not _NO_KEY:
                    root = got
        return root


_MERGE_KEY = object()


def load_yaml(text: str) -> Any:
    """Parse one YAML document into dicts, lists and scalars, or raise DocumentError."""
    enabled = gc.isenabled()
    gc.disable()  # millions of small containers: the cyclic collector only slows this down
    try:
        return _Builder(text).build()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = (exc.problem or exc.context or "syntax error").replace("\n", " ")
        raise DocumentError("", f"not valid YAML: {problem}", line) from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise DocumentError("", f"not valid YAML: {first}") from None
    finally:
        if enabled:
            gc.enable()
