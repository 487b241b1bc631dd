"""JSON text that orjson and msgspec refuse or alter, read and written without changing it.

RFC 8259 allows numbers of any size and precision and any ``\\uXXXX`` escape, paired or not;
orjson refuses a number beyond a double and an escape that is no Unicode character, and turns
an integer beyond 64 bits into a float. The apiserver logs request bodies verbatim, so a user
who may PATCH chooses those bytes. This module is the slow path for them: it tells what is JSON
by the grammar (the standard library's parser, strict) for both programs, and, for the relay,
puts an item that spans lines on one line, and parses and writes an event keeping every number
as its text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

_STRING_OR_SPACE = re.compile(rb'("(?:[^"\\]|\\.)*")|[ \t\n\r]+')
_SURROGATE = re.compile("[\ud800-\udfff]")
_ITEMS_KEY = b'"items"'


class Number:
    """A JSON number kept as its text, so that writing the event gives the same digits.

    A plain class, not a dataclass: orjson writes those as objects, and must refuse this one
    for ``dumps`` to write it.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Number) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Number({self.text!r})"


def loads(
    body: bytes,
    *,
    parse_float: Callable[[str], Any] = Number,
    parse_int: Callable[[str], Any] = Number,
) -> Any:
    """The JSON document in ``body``, strings as decoded (a lone surrogate stays a code point),
    numbers as ``parse_float``/``parse_int`` make them (by default ``Number``, their text).

    The one test of what is JSON by RFC 8259 (UTF-8, no NaN or Infinity) for both programs.
    Raises ValueError (or RecursionError) for anything else.
    """
    return json.loads(
        body.decode("utf-8"),
        parse_float=parse_float,
        parse_int=parse_int,
        parse_constant=_not_json,
    )


def dumps(value: Any) -> bytes:
    """Compact JSON of a ``loads`` document (or a parsed one), every ``Number`` as its text.

    Raises RecursionError when nested deeper than the interpreter's recursion limit allows.
    """
    if isinstance(value, dict):
        members = (_string(str(key)) + b":" + dumps(item) for key, item in value.items())
        return b"{" + b",".join(members) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(dumps(item) for item in value) + b"]"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Number):
        return value.text.encode()
    return orjson.dumps(value)


def one_line(raw: bytes) -> bytes:
    """Valid JSON ``raw`` on one line: as it is, or, when it spans lines, without whitespace
    between its tokens; every token as it was."""
    if b"\n" not in raw and b"\r" not in raw:
        return raw
    return _STRING_OR_SPACE.sub(lambda match: match[1] or b"", raw)


def _string(text: str) -> bytes:
    # A lone surrogate cannot be UTF-8: written as the escape it came from.
    return json.dumps(text, ensure_ascii=_SURROGATE.search(text) is not None).encode()


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
