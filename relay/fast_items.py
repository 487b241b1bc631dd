"""Audit events passed through as the apiserver sent them, reading only the fields the relay needs.

Parsing each event into Python objects, encoding it again and freeing those objects took most of
a relay worker's time (issue 8). Here an EventList body is decoded with msgspec keeping each item
as its own bytes (``msgspec.Raw``), and only the fields for validation, the record's key,
headers and timestamp are decoded from an item. ``relay.events.build_batch`` publishes an item's
own bytes when that is safe, and parses it in full otherwise.

msgspec skips the bytes it keeps raw without checking everything orjson refuses (invalid UTF-8,
numbers beyond a double), so ``event_list`` leaves bodies holding either to the full parse, which
answers them as before.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

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
_ABSENT = Raw(b"")
_ORJSON_MAX_DEPTH = 1024


class EventListEnvelope(msgspec.Struct):
    kind: Any = None
    apiVersion: Any = None
    items: list[Raw] | None = None


class UserFields(msgspec.Struct):
    username: str | None = None


class ObjectRefFields(msgspec.Struct):
    resource: str | None = None
    namespace: str | None = None
    subresource: str | None = None


class EventFields(msgspec.Struct):
    """What the relay reads of an event. Decoding fails, and the item is parsed in full, when a
    field is missing or of another type, which covers each of ``relay.events.invalid_reason``'s
    complaints but the stageTimestamp's format."""

    auditID: str
    stage: str
    verb: str
    level: str
    requestURI: str
    stageTimestamp: str
    kind: Any = UNSET
    apiVersion: Any = UNSET
    user: UserFields | UnsetType = UNSET
    objectRef: ObjectRefFields | UnsetType = UNSET
    annotations: dict[str, Any] | UnsetType = UNSET
    requestObject: Raw = _ABSENT
    responseObject: Raw = _ABSENT


_ENVELOPE = msgspec.json.Decoder(EventListEnvelope)
_FIELDS = msgspec.json.Decoder(EventFields)
_EMPTY_REF = ObjectRefFields()
_EMPTY_USER = UserFields()


def event_list(body: bytes) -> EventListEnvelope | None:
    """The envelope of an EventList body with its items raw, or None to parse the body in full.

    None for anything but an EventList whose every byte orjson accepts too. Called by
    ``relay.body.parse_body``; never raises.
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


def passable(raw: Raw, api_version: str) -> tuple[EventFields, bytes] | None:
    """The fields of an item and its record's value made of its own bytes, or None.

    The value is the item with ``kind`` and ``apiVersion`` put first, as
    ``relay.events.encode_event`` writes them. None when the item is not a valid event as far
    as its fields' types tell, carries its own kind or apiVersion, or holds a raw line break (a
    value is a line of the apiserver's audit.log). Called by ``relay.events.build_batch``;
    never raises.
    """
    try:
        fields = _FIELDS.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    if fields.kind is not UNSET or fields.apiVersion is not UNSET:
        return None
    # A decoded object with required members starts with "{" and a member, never "{}".
    value = b'{"kind":"Event","apiVersion":"%s",' % api_version.encode() + memoryview(raw)[1:]
    if b"\n" in value or b"\r" in value:
        return None
    return fields, value


def object_ref(fields: EventFields) -> ObjectRefFields:
    return fields.objectRef if isinstance(fields.objectRef, ObjectRefFields) else _EMPTY_REF


def user(fields: EventFields) -> UserFields:
    return fields.user if isinstance(fields.user, UserFields) else _EMPTY_USER


def bodies(fields: EventFields) -> list[bytes]:
    """The JSON of the event's request and response objects, those it has."""
    return [bytes(raw) for raw in (fields.requestObject, fields.responseObject) if len(raw)]


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
