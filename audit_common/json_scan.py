"""JSON's grammar at the byte level: where things are, at any depth, in bytes of any encoding.

kube-apiserver writes patch bodies into ``requestObject`` as sent: Go's decoder accepts nesting
up to 10,000 levels, and Go's encoder passes bytes that are not UTF-8 through inside strings.
orjson, msgspec and the standard library refuse both (at about 1,000 levels, and at the first
such byte), so they cannot tell where one item of an EventList ends. This module can: a regex
tokenises strings and structural characters (C speed, one Python step per token, none per byte),
an explicit stack replaces recursion, and positions are offsets into the caller's buffer, never a
copy of it. Two passes, each for one caller:

- ``outline``: the top-level object of a request body, its members, and the elements of its
  ``items`` array, checking only the structure that separates them (the relay's split);
- ``members``: one value checked against the whole grammar, and the spans of the members of the
  object it is (the relay's reading of an item, a consumer's reading of a deep event).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import orjson

from audit_common.errors import PayloadTooLarge

# A string (any byte but an unescaped quote or backslash; its content is checked per item), a
# structural character, or a quote no string closes (a torn body). Also the relay's scan of
# what it withholds (``relay.events.dead_letters``).
LEXEME = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"|[{}\[\],:"]', re.DOTALL)
# One token of JSON (RFC 8259) after insignificant whitespace: 1 a string, 2 a structural
# character, 3 a number or literal. Any byte >= 0x20 may be in a string, UTF-8 or not.
_TOKEN = re.compile(
    rb"[ \t\n\r]*+(?:"
    rb'("[^"\\\x00-\x1f]*+(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*+)*+")'
    rb"|([{}\[\],:])"
    rb"|(-?+(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+(?:[eE][+-]?+[0-9]++)?+|true|false|null))"
)
_SPACE = re.compile(rb"[ \t\n\r]*+")
_ITEMS = b'"items"'
_OPEN = b"{["
_QUOTE, _LBRACE, _LBRACKET, _COMMA, _COLON = b'"{[,:'
# ``members``' states: what the next token may be.
_VALUE, _VALUE_OR_CLOSE, _KEY_OR_CLOSE, _KEY, _COLON_NEXT, _AFTER_VALUE = range(6)

Span = tuple[int, int]


class TooManyItems(PayloadTooLarge):
    """An EventList holds more items than a request may (the relay's
    ``--max-items-per-request``)."""

    def __init__(self, max_items: int) -> None:
        super().__init__(f"more than {max_items} items in one request (--max-items-per-request)")


@dataclass
class Outline:
    """What ``outline`` found: the spans of the top-level object, of its members' values (by
    name, as their JSON text) and of the elements of its ``items`` array when it is one."""

    start: int
    end: int
    members: dict[bytes, Span] = field(default_factory=dict)
    items: list[Span] | None = None


def outline(body: bytes, max_items: int) -> Outline:
    """The top-level object of ``body`` and the elements of its ``items`` array, by structure.

    Only what separates members and items is checked here (each item's own grammar is checked
    when it is read), so that one broken item costs only itself. Called by the relay's split for
    a body msgspec refused. Raises TooManyItems as soon as the array has more than
    ``max_items`` elements, and ValueError, saying where, when the body is no object or torn:
    then no item's end can be told.
    """
    first = _SPACE.match(body).end()  # type: ignore[union-attr]  # matches the empty string
    if body[first : first + 1] != b"{":
        raise ValueError(f"expected an object at byte {first}")
    found = Outline(first, -1)
    depth = 0
    opened = bytearray()  # the brackets open at depths 1 and 2, to check they close alike
    key: bytes | None = None  # the member name at depth 1 whose value comes next
    start = -1  # where the current member's value starts
    item_start = -1
    items: list[Span] | None = None
    for match in LEXEME.finditer(body, first):
        token = match[0]
        head = token[0]
        if found.end >= 0:
            raise ValueError(f"bytes after the top-level object at byte {match.start()}")
        if head == _QUOTE:
            if len(token) == 1:
                raise ValueError(f"a string that does not end, at byte {match.start()}")
            if depth == 1 and start < 0:
                key = token
            continue
        if head == _COLON:
            if depth == 1:
                start = match.end()
            continue
        if head == _COMMA:
            if depth == 1 and key is not None and start >= 0:
                found.members[key] = (start, match.start())
                key, start = None, -1
            elif depth == 2 and items is not None:
                items.append(_trimmed(body, item_start, match.start()))
                if len(items) > max_items:
                    raise TooManyItems(max_items)
                item_start = match.end()
            continue
        if head in _OPEN:
            depth += 1
            if depth <= 2:
                opened.append(head)
            if depth == 2 and head == _LBRACKET and key == _ITEMS:
                items, item_start = [], match.end()
            continue
        # A closing bracket.
        if depth <= 2 and (not opened or head - opened.pop() != 2):  # "}" - "{" == "]" - "[" == 2
            raise ValueError(f"a bracket that does not close the one open, at byte {match.start()}")
        if depth == 2 and items is not None:
            last = _trimmed(body, item_start, match.start())
            if last[0] < last[1] or items:
                items.append(last)
            if len(items) > max_items:
                raise TooManyItems(max_items)
            found.items, items = items, None  # a later "items" wins, as in JSON
        elif depth == 1:
            if key is not None and start >= 0:
                found.members[key] = (start, match.start())
            found.end = match.end()
        depth -= 1
    if found.end < 0:
        raise ValueError("the body ends inside its top-level object: torn or truncated")
    if _SPACE.match(body, found.end).end() != len(body):  # type: ignore[union-attr]
        raise ValueError(f"bytes after the top-level object at byte {found.end}")
    return found


def members(value: bytes | memoryview) -> dict[str, Span]:
    """The members of the JSON object ``value``, each name with the span of its value's text.

    ``value`` is checked against the whole of RFC 8259's grammar but UTF-8 (strings may hold
    any byte from 0x20), at any depth. A name given twice keeps its last value, as Go and
    orjson do. Called by the relay for an item orjson cannot read, and by consumers for an
    event msgspec cannot. Raises ValueError, saying where, when ``value`` is not an object.
    """
    spans: dict[str, Span] = {}
    stack = bytearray()
    state = _VALUE
    position = 0
    name: bytes | None = None
    value_start = -1
    for match in _TOKEN.finditer(value):
        if match.start() != position:
            break  # a byte no token starts with: reported below
        position = match.end()
        kind = match.lastindex
        if kind == 2:
            head = value[match.start(2)]
            if head in (_LBRACE, _LBRACKET):
                if state > _VALUE_OR_CLOSE or (not stack and head != _LBRACE):
                    raise ValueError(f"unexpected {chr(head)!r} at byte {match.start(2)}")
                if len(stack) == 1:
                    value_start = match.start(2)
                stack.append(head)
                state = _KEY_OR_CLOSE if head == _LBRACE else _VALUE_OR_CLOSE
                continue
            if head == _COLON:
                if state != _COLON_NEXT:
                    raise ValueError(f"unexpected ':' at byte {match.start(2)}")
                state = _VALUE
                continue
            if head == _COMMA:
                if state != _AFTER_VALUE or not stack:
                    raise ValueError(f"unexpected ',' at byte {match.start(2)}")
                state = _KEY if stack[-1] == _LBRACE else _VALUE
                continue
            # "}" or "]": closes the innermost bracket, which must be its own kind.
            allowed = _KEY_OR_CLOSE if head == 0x7D else _VALUE_OR_CLOSE
            if (state != _AFTER_VALUE and state != allowed) or not stack or head - stack[-1] != 2:
                raise ValueError(f"unexpected {chr(head)!r} at byte {match.start(2)}")
            stack.pop()
            state = _AFTER_VALUE
        elif kind == 1 and (state in (_KEY, _KEY_OR_CLOSE)):
            if len(stack) == 1:
                name = match[1]
            state = _COLON_NEXT
            continue
        elif state <= _VALUE_OR_CLOSE and stack:
            if len(stack) == 1:
                value_start = match.start(kind or 0)
            state = _AFTER_VALUE
        else:
            raise ValueError(f"unexpected value at byte {match.start(kind or 0)}")
        if len(stack) == 1 and name is not None:  # a value of the top-level object just ended
            spans[_name(name)] = (value_start, match.end())
            name = None
        elif not stack:
            break  # the top-level object closed
    if stack or state != _AFTER_VALUE:
        raise ValueError(f"not a JSON object: {_what_stopped(value, position)}")
    if _SPACE.match(value, position).end() != len(value):  # type: ignore[union-attr]
        raise ValueError(f"bytes after the object at byte {position}")
    return spans


def _trimmed(body: bytes, start: int, end: int) -> Span:
    """``start``, ``end`` without the whitespace at either end."""
    start = _SPACE.match(body, start, end).end()  # type: ignore[union-attr]
    while end > start and body[end - 1] in b" \t\n\r":
        end -= 1
    return start, end


def _name(token: bytes) -> str:
    try:
        return str(orjson.loads(token))
    except orjson.JSONDecodeError:  # a lone surrogate escape, or bytes that are not UTF-8
        return str(json.loads(token.decode("utf-8", "surrogateescape")))


def _what_stopped(value: bytes | memoryview, position: int) -> str:
    if _SPACE.match(value, position).end() == len(value):  # type: ignore[union-attr]
        return "it ends before its last bracket closes"
    return f"no JSON token at byte {position}"
