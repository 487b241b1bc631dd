"""Hypothesis strategies for what kube-apiserver's Go encoder can write into an audit event.

The apiserver logs a PATCH body into ``requestObject`` as sent, compacted but not checked:
Go's decoder accepts nesting up to 10,000 levels, strings may hold any byte from 0x20 (bytes
that are not UTF-8 included) and every escape (``\\u0000`` too), numbers any number of digits.
Built as bytes, like ``json_grammar`` (which it extends), since Python values cannot hold them.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import strategies as st

from tests.support import json_grammar

GO_MAX_DEPTH = 10_000
# Bytes Go passes through inside a string: anything from 0x20 but the quote and the backslash.
_RAW_BYTES = st.binary(min_size=1, max_size=16).map(
    lambda raw: bytes(b if b >= 0x20 and b not in b'"\\' else 0x61 for b in raw)
)
_NOT_UTF8 = st.sampled_from(
    [b"\xe9\xff\xfe", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80"]
)
_ESCAPES = st.sampled_from([b"\\u0000", b"\\u001f", b"\\ud800", b"\\n", b'\\"', b"\\\\"])
STRINGS = st.lists(
    st.one_of(_RAW_BYTES, _NOT_UTF8, _ESCAPES, json_grammar.STRINGS.map(lambda s: s[1:-1])),
    max_size=8,
).map(lambda parts: b'"' + b"".join(parts) + b'"')
NUMBERS = st.one_of(
    json_grammar.NUMBERS,
    st.integers(1, 3000).map(lambda digits: b"-1" + b"7" * digits + b".5e-99999"),
)
SCALARS = st.one_of(st.sampled_from([b"true", b"false", b"null"]), NUMBERS, STRINGS)


def _array(values: list[bytes]) -> bytes:
    return b"[" + b",".join(values) + b"]"


def _object(members: list[tuple[bytes, bytes]]) -> bytes:
    return b"{" + b",".join(name + b":" + value for name, value in members) + b"}"


VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(_array),
        st.lists(st.tuples(STRINGS, children), max_size=4).map(_object),
    ),
    max_leaves=10,
)


def nested(depth: int, inner: bytes, objects: bool) -> bytes:
    """``inner`` inside ``depth`` arrays, or objects of one member, as a merge patch nests."""
    if objects:
        return b'{"a":' * depth + inner + b"}" * depth
    return b"[" * depth + inner + b"]" * depth


DEPTHS = st.one_of(
    st.sampled_from([255, 256, 1024, 1025, 1102, 4002, GO_MAX_DEPTH]), st.integers(1, GO_MAX_DEPTH)
)
DEEP_VALUES = st.builds(nested, DEPTHS, VALUES, st.booleans())
# Items of several MB: one long string, or many members. Few examples of these keep tests quick.
HUGE_VALUES = st.one_of(
    st.integers(2, 6).map(lambda mb: b'"' + b"x\xff" * (mb << 19) + b'"'),
    st.integers(2, 4).map(
        lambda mb: _object([(b'"k%d"' % i, b'"' + b"v" * 1000 + b'"') for i in range(mb << 10)])
    ),
)


def item(fields: dict[str, Any], request_object: bytes, annotation: bytes | None = None) -> bytes:
    """An item of an EventList as the apiserver posts it: ``fields`` (no kind or apiVersion),
    with ``request_object`` as its requestObject and ``annotation`` as one annotation's value."""
    event = {**fields, "requestObject": "@request"}
    if annotation is not None:
        event["annotations"] = {**event.get("annotations", {}), "example.com/note": "@note"}
    raw = orjson.dumps(event).replace(b'"@request"', request_object)
    return raw.replace(b'"@note"', annotation) if annotation is not None else raw


def event_list(items: list[bytes]) -> bytes:
    """An EventList of ``items``' bytes, compact, as the apiserver posts it."""
    return b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[' + (
        b",".join(items) + b"]}\n"
    )
