"""Dead letters of the relay: what it could not publish as an event, kept for a person to read.

A dead letter keeps the bytes received, cut to a limit, unless they are withheld: while
redaction is on, a body or item the redactor could not read may hold a Secret's values, and the
dead-letter topic must not carry what the events topic would not. A withheld dead letter's value
is then a small JSON document instead: the reason, the size and SHA-256 of the bytes (to match
them with the sender's copy), and the ``auditID``, ``verb``, ``user.username``, ``objectRef`` and
``stageTimestamp`` that a scan of the bytes finds, so that one can tell whose events were lost.

The scan reads JSON's tokens with one regular expression and a depth counter: no parse, no
recursion, so it reads bytes that are not UTF-8, nesting of any depth and torn bodies alike. It
takes a field only as a member of an event object (the document itself, or an item of its
top-level ``items`` array), never from the objects an event carries, where a Secret's data may
have a key named ``auditID``; it stops at a string that does not end.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import orjson

from audit_common.headers import (
    CLUSTER,
    CONTENT_WITHHELD,
    REASON,
    SCHEMA_VERSION,
    SCHEMA_VERSION_HEADER,
    TRUNCATED_FROM_BYTES,
)
from audit_common.json_scan import LEXEME
from relay.events.records import DEAD_LETTER, OutboundRecord

_SURROGATE = re.compile("[\ud800-\udfff]")
_EVENT_FIELDS = frozenset({b"auditID", b"verb", b"stageTimestamp"})
_OBJECT_REF_FIELDS = frozenset(
    {
        b"resource",
        b"namespace",
        b"name",
        b"uid",
        b"apiGroup",
        b"apiVersion",
        b"resourceVersion",
        b"subresource",
    }
)
# Bounds on what a withheld dead letter lists, so that it stays small whatever was sent.
MAX_FIELD_CHARS = 256
MAX_LISTED_ITEMS = 100


def dead_letter(
    raw: bytes, reason: str, cluster: str, limit: int, *, withhold: bool = False
) -> OutboundRecord:
    """A record keeping ``raw`` (cut to ``limit`` bytes, said in a header) for inspection.

    With ``withhold`` (redaction is on and could not clear ``raw``) the value is ``summary``'s
    document instead, and the ``content-withheld`` header says so. Called by the webhook handler
    for a body it refuses, by ``relay.events.build`` for an item that is no event, and by
    ``relay.kafka.refusals`` for a record the broker refused. Never raises.
    """
    headers = [
        (SCHEMA_VERSION_HEADER, SCHEMA_VERSION),
        (REASON, reason.encode()),
        (CLUSTER, cluster.encode()),
    ]
    if withhold:
        headers.append((CONTENT_WITHHELD, b"true"))
        raw = summary(raw, reason, limit)
    elif len(raw) > limit:
        headers.append((TRUNCATED_FROM_BYTES, str(len(raw)).encode()))
        raw = raw[:limit]
    return OutboundRecord(DEAD_LETTER, raw, None, tuple(headers), None)


def summary(raw: bytes, reason: str, limit: int) -> bytes:
    """The JSON document of a withheld dead letter of ``raw``, within ``limit`` bytes when the
    listed items allow: ``reason``, ``size``, ``sha256``; the event fields found when ``raw`` is
    one event, or ``items`` (at most ``MAX_LISTED_ITEMS``, of ``itemsFound``) for an EventList.
    """
    document: dict[str, Any] = {
        "reason": reason,
        "size": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    top, items = event_fields(raw)
    document.update(top)
    if items:
        document["itemsFound"] = len(items)
        document["items"] = items[:MAX_LISTED_ITEMS]
        while len(orjson.dumps(document)) > limit and document["items"]:
            document["items"] = document["items"][: len(document["items"]) // 2]
    # A copy of its own size: orjson's bytes keep the (larger) buffer it wrote into.
    return bytes(memoryview(orjson.dumps(document)))


def event_fields(raw: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The event fields found in ``raw``: those of the top-level object, and those of each item
    of its top-level ``items`` array (an EventList), by a scan of its tokens; never raises."""
    top: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    depth = 0  # containers open
    keys: dict[int, bytes] = {}  # the last key read in the object open at each shallow depth
    arrays: set[int] = set()  # the shallow depths whose open container is an array
    pending: bytes | None = None  # a string that is a key if a colon follows
    after_colon = False
    # A whole string literal, a quote that starts none (the string does not end: the scan
    # stops), or a structural character; other bytes are skipped.
    for match in LEXEME.finditer(raw):
        token = match.group()
        if token[:1] == b'"':
            if len(token) == 1:
                break  # a string that never ends: nothing after it is where it seems
            if after_colon and depth <= 4 and 1 not in arrays:
                in_item = depth >= 3 and bool(items) and _in_item(keys, arrays)
                _take(items[-1] if in_item else top, keys, 3 if in_item else 1, depth, token)
            else:
                pending = token[1:-1]
            after_colon = False
        elif token == b":":
            if pending is not None and depth <= 4:
                keys[depth] = pending
            after_colon, pending = pending is not None, None
        elif token in (b"{", b"["):
            depth += 1
            if depth <= 4:
                keys.pop(depth, None)
                if token == b"[":
                    arrays.add(depth)
                else:
                    arrays.discard(depth)
            if token == b"{" and depth == 3 and _in_item(keys, arrays):
                items.append({})
            after_colon, pending = False, None
        else:
            if token in (b"}", b"]"):
                depth -= 1
            after_colon, pending = False, None
    return top, [item for item in items if item]


def _in_item(keys: dict[int, bytes], arrays: set[int]) -> bool:
    """Whether what is open at depth 3 sits in the top-level object's ``items`` array."""
    return 1 not in arrays and 2 in arrays and 3 not in arrays and keys.get(1) == b"items"


def _take(
    event: dict[str, Any], keys: dict[int, bytes], event_depth: int, depth: int, token: bytes
) -> None:
    """Keep the string ``token``, the value of ``keys[depth]``, in ``event`` (the fields of the
    object open at ``event_depth``) if it is one of the event fields listed."""
    name = keys.get(depth)
    if depth == event_depth and name in _EVENT_FIELDS:
        event[name.decode()] = _text(token)
        return
    member = keys.get(event_depth)
    if depth != event_depth + 1 or name is None:
        return
    if member == b"user" and name == b"username":
        event["user"] = {"username": _text(token)}
    elif member == b"objectRef" and name in _OBJECT_REF_FIELDS:
        event.setdefault("objectRef", {})[name.decode()] = _text(token)


def _text(token: bytes) -> str | None:
    """A JSON string literal as text, cut to ``MAX_FIELD_CHARS``; bytes that are not UTF-8 and
    lone surrogate escapes become replacement characters; None for a literal that is no JSON
    string (a control character in it)."""
    try:
        value: str = json.loads(token.decode("utf-8", "replace"))
    except ValueError:
        return None
    return _SURROGATE.sub("\ufffd", value[:MAX_FIELD_CHARS])
