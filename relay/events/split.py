"""Splitting a request body into its events: the first step after the body is received.

An EventList whose bytes orjson would accept too is decoded by msgspec with each item kept as its
own bytes (``msgspec.Raw``), for ``relay.events.build`` to pass through as they are; any other
body is parsed in full by orjson. Either way the caller gets the items and their apiVersion, or
BadRequest. Parsing every event into Python objects and encoding it again took most of a relay
worker's time (issue 8).

msgspec skips the bytes it keeps raw without checking everything orjson refuses (invalid UTF-8,
numbers beyond a double), so ``split`` leaves bodies holding either to the full parse, which
answers them as before.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

import msgspec
import orjson
from msgspec import Raw

from audit_common.errors import BadRequest

DEFAULT_API_VERSION = "audit.k8s.io/v1"
API_VERSIONS = ("audit.k8s.io/v1", "audit.k8s.io/v1beta1")

# The shape of a body, to find at C speed the numbers that may be beyond a double (a regular
# expression over the body took longer than parsing it): what a number is made of becomes "0",
# what may come before a number ":", anything else "x". Strings start with a quote, so a run of
# "0" after ":" is a number (or, rarely, text such as "a:12345" in a string: checked the same).
_SHAPES = bytearray(b"x" * 256)
for _chars, _shape in ((b"0123456789.eE+-", b"0"), (b":,[ \t\r\n", b":")):
    for _char in _chars:
        _SHAPES[_char] = _shape[0]
_SHAPE_TABLE = bytes(_SHAPES)
_LONG_NUMBER = b":00000"  # "2e308", the shortest number beyond a double, has 5 characters
_NUMBER = re.compile(rb"0+")
_ORJSON_MAX_DEPTH = 1024


class EventListEnvelope(msgspec.Struct):
    kind: Any = None
    apiVersion: Any = None
    items: list[Raw] | None = None


_ENVELOPE = msgspec.json.Decoder(EventListEnvelope)


def split(body: bytes) -> tuple[list[Any], str]:
    """The items of an EventList or single Event body and their apiVersion.

    The items of an EventList are ``msgspec.Raw`` when msgspec could read it, parsed by orjson
    otherwise. Called by the webhook handler. Raises BadRequest when the body is not JSON, or
    neither an EventList nor an Event.
    """
    envelope = _raw_event_list(body)
    if envelope is None:
        return items_of(parse_json(body))
    return items_of(
        {"kind": "EventList", "apiVersion": envelope.apiVersion, "items": envelope.items}
    )


def parse_json(body: bytes) -> Any:
    """The JSON document in ``body``. Raises BadRequest naming the parser's complaint."""
    if not body.strip():
        raise BadRequest("empty body: expected an audit EventList or Event")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc


def items_of(document: Any) -> tuple[list[Any], str]:
    """The items of an EventList, or a single Event as a list of one, with the apiVersion.

    Raises BadRequest for anything else; the caller dead-letters the raw body.
    """
    if not isinstance(document, dict):
        raise BadRequest("body is not a JSON object: expected an audit EventList or Event")
    kind = document.get("kind")
    api_version = document.get("apiVersion")
    if api_version is not None and api_version not in API_VERSIONS:
        raise BadRequest(f"unsupported apiVersion {api_version!r}: expected one of {API_VERSIONS}")
    if kind == "EventList":
        items = document.get("items")
        if items is None:
            return [], api_version or DEFAULT_API_VERSION
        if not isinstance(items, list):
            raise BadRequest("EventList.items is not a list")
        return items, api_version or DEFAULT_API_VERSION
    if kind == "Event" or (kind is None and "auditID" in document):
        return [document], api_version or DEFAULT_API_VERSION
    raise BadRequest(f"kind {kind!r} is neither EventList nor Event")


def _raw_event_list(body: bytes) -> EventListEnvelope | None:
    """The envelope of an EventList body with its items raw, or None to parse the body in full.

    None for anything but an EventList whose every byte orjson accepts too; never raises.
    """
    # msgspec refuses nesting deeper than the interpreter's recursion limit, orjson deeper than
    # 1024 levels: under a higher limit (hypothesis sets one) msgspec may read what orjson refuses.
    if sys.getrecursionlimit() > _ORJSON_MAX_DEPTH:
        return None
    if not _is_utf8(body) or _may_overflow(body):
        return None
    try:
        envelope = _ENVELOPE.decode(body)
    except (msgspec.DecodeError, RecursionError):  # DecodeError: also a shape not handled here
        return None
    return envelope if envelope.kind == "EventList" else None


def _is_utf8(body: bytes) -> bool:
    if body.isascii():
        return True
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


def _may_overflow(body: bytes) -> bool:
    """Whether ``body`` holds a number beyond a double (or text in a string that reads as one)."""
    shape = body.translate(_SHAPE_TABLE)
    at = shape.find(_LONG_NUMBER)
    while at >= 0:
        match = _NUMBER.match(shape, at + 1)
        end = match.end() if match is not None else at + 1
        try:
            if math.isinf(float(body[at + 1 : end])):
                return True
        except ValueError:
            pass  # text such as "1-2" in a string
        at = shape.find(_LONG_NUMBER, end)
    return False
