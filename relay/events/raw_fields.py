"""The few fields the relay reads of an event it passes through as its own bytes.

Only what validation, the record's key, headers and timestamp need is decoded from a raw item
(``relay.events.split``); ``relay.events.build`` then publishes the item's own bytes when
``passable`` says that is safe, and parses it in full otherwise.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

_ABSENT = Raw(b"")


class UserFields(msgspec.Struct):
    username: str | None = None


class ObjectRefFields(msgspec.Struct):
    resource: str | None = None
    namespace: str | None = None
    subresource: str | None = None


class EventFields(msgspec.Struct):
    """What the relay reads of an event. Decoding fails, and the item is parsed in full, when a
    field is missing or of another type, which covers each of ``build.invalid_reason``'s
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


_FIELDS = msgspec.json.Decoder(EventFields)
_EMPTY_REF = ObjectRefFields()
_EMPTY_USER = UserFields()


def passable(raw: Raw, api_version: str) -> tuple[EventFields, bytes] | None:
    """The fields of an item and its record's value made of its own bytes, or None.

    The value is the item with ``kind`` and ``apiVersion`` put first, as
    ``relay.events.build.encode_event`` writes them. None when the item is not a valid event as far
    as its fields' types tell, carries its own kind or apiVersion, or holds a raw line break (a
    value is a line of the apiserver's audit.log). Called by ``relay.events.build.build_batch``;
    never raises.
    """
    try:
        fields = _FIELDS.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    if fields.kind is not UNSET or fields.apiVersion is not UNSET:
        return None
    value = with_envelope(raw, api_version)
    if b"\n" in value or b"\r" in value:
        return None
    return fields, value


def with_envelope(event: bytes | Raw, api_version: str) -> bytes:
    """A compact event object's bytes with ``kind`` and ``apiVersion`` put first, as
    ``relay.events.build.encode_event`` writes them; the rest as it is."""
    # An event has members: it starts with "{" and a member, never "{}".
    return b'{"kind":"Event","apiVersion":"%s",' % api_version.encode() + memoryview(event)[1:]


def object_ref(fields: EventFields) -> ObjectRefFields:
    return fields.objectRef if isinstance(fields.objectRef, ObjectRefFields) else _EMPTY_REF


def user(fields: EventFields) -> UserFields:
    return fields.user if isinstance(fields.user, UserFields) else _EMPTY_USER


def bodies(fields: EventFields) -> list[bytes]:
    """The JSON of the event's request and response objects, those it has."""
    return [bytes(raw) for raw in (fields.requestObject, fields.responseObject) if len(raw)]
