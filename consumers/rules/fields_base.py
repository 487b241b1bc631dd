"""What every field of ``consumers.rules.fields`` is made of: its definition, its argument kinds,
and the JSON walks and renderings the k8saudit plugin applies to an audit event.

The plugin reads the event with fastjson; these helpers give the same answers on the objects
``orjson.loads`` returns (dict, list, str, int, float, bool, None), without copying them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import orjson

Value: TypeAlias = str | int | bool
Extract: TypeAlias = Callable[[Mapping[str, Any]], list[Value]]
FieldType: TypeAlias = Literal["string", "uint64", "bool"]
# "index": an optional container/rule/volume index, ``field[0]``; "key": a required string,
# ``ka.uri.param[watch]``; "pointer": a required JSON pointer, ``jevt.value[/user/username]``.
ArgKind: TypeAlias = Literal["none", "index", "key", "pointer"]
# What a field's factory receives: None, the index, the key, or the pointer's reference tokens.
Arg: TypeAlias = int | str | tuple[str, ...] | None
Build: TypeAlias = Callable[[Arg], Extract]

MISSING: Any = object()  # a path that leads nowhere: the plugin's "field not available"


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One field as the plugin publishes it: read by ``bind_field`` to check an argument and to
    build the extractor (``build(arg)``), and by documentation/listing code."""

    name: str
    type: FieldType
    is_list: bool
    arg: ArgKind
    arg_required: bool
    description: str
    build: Build


def text(value: Any) -> str:
    """A JSON value as the plugin renders it for a string field: strings as they are, anything
    else as compact JSON text (``true``, ``0``, ``{"kind":"User",...}``), keys in event order."""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # integers beyond 64 bits, which orjson does not encode
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def child(node: Any, key: str) -> Any:
    """``node[key]``, or MISSING (also under MISSING); as fastjson's Get, a key into an array is
    an index."""
    if node is MISSING:
        return MISSING
    if type(node) is list:
        if key.isascii() and key.isdigit():
            index = int(key)
            return node[index] if index < len(node) else MISSING
        return MISSING
    return node.get(key, MISSING) if isinstance(node, Mapping) else MISSING


def lookup(node: Any, path: Sequence[str]) -> Any:
    """The value at ``path`` under ``node``, or MISSING."""
    for key in path:
        # Decoded JSON objects are dicts: the common case skips a call.
        node = node.get(key, MISSING) if type(node) is dict else child(node, key)
        if node is MISSING:
            break
    return node


def spread(node: Any, path: Sequence[str], index: int | None) -> list[Any] | None:
    """The values at ``path``, fanned out over every array met on the way: one value per
    element (MISSING where that element lacks the rest of the path), or only element ``index``
    of each array when an index is given. None when the path leads nowhere (with ``index``: also
    when an array is too short). An empty key stands for the value itself."""
    for position, key in enumerate(path):
        if type(node) is list:
            if index is None:
                found: list[Any] = []
                rest = path[position:]
                for item in node:
                    values = spread(item, rest, None)
                    if values is None:
                        found.append(MISSING)
                    else:
                        found.extend(values)
                return found
            if index >= len(node):
                return None
            node = node[index]
        if key:
            node = node.get(key, MISSING) if type(node) is dict else child(node, key)
            if node is MISSING:
                return None
    return [node]


def texts_present(values: Sequence[Any]) -> list[Value]:
    """The rendered values, leaving out the elements that lack the value."""
    return [text(value) for value in values if value is not MISSING]


def plain(name: str, description: str, extract: Extract, *, is_list: bool = False) -> FieldDef:
    """A string field that takes no argument."""
    return FieldDef(name, "string", is_list, "none", False, description, lambda _arg: extract)


def scalar(*path: str) -> Extract:
    """The value at ``path`` of the event, rendered as text (the plugin's extractFromKeys)."""

    first, rest = path[0], path[1:]

    def extract(event: Mapping[str, Any]) -> list[Value]:
        # Runs for every event and every rule reading the field: lookup and text inlined.
        value = event.get(first, MISSING)
        for key in rest:
            value = value.get(key, MISSING) if type(value) is dict else child(value, key)
            if value is MISSING:
                return []
        if value is MISSING or "auditID" not in event:
            return []
        return [value if type(value) is str else text(value)]

    return extract


def listed(*path: str) -> Extract:
    """Every element of the array at ``path``, rendered as text; a value that is no array gives
    nothing (the plugin fails the extraction with a wrong-type error)."""

    def extract(event: Mapping[str, Any]) -> list[Value]:
        if "auditID" not in event:
            return []
        values = lookup(event, path)
        if type(values) is not list:
            return []
        return [value if type(value) is str else text(value) for value in values]

    return extract


def index_of(arg: Arg) -> int | None:
    """The index argument of a field that allows one, None without."""
    return arg if isinstance(arg, int) else None


def along(*path: str) -> Build:
    """A field giving the value at ``path`` for every array element met on the way (containers,
    volumes), leaving out the elements without it; the index argument keeps one element."""

    def build(arg: Arg) -> Extract:
        index = index_of(arg)

        def extract(event: Mapping[str, Any]) -> list[Value]:
            if "auditID" not in event:
                return []
            values = spread(event, path, index)
            return [] if values is None else texts_present(values)

        return extract

    return build


def indexed(name: str, description: str, build: Build) -> FieldDef:
    """A list field of strings that takes an optional index."""
    return FieldDef(name, "string", True, "index", False, description, build)
