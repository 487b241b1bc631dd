"""Splitting a request body into its events: the first step after the body is received.

An EventList of valid UTF-8 is decoded by msgspec with each item kept as its own bytes
(``msgspec.Raw``), for ``relay.events.build`` to pass through as they are; any other body is
parsed in full by orjson, and valid JSON (RFC 8259) that orjson refuses (a number beyond a
double, an escape that is no Unicode character) by ``json_text``, with the items of an
EventList cut out as their own bytes again. Either way the caller gets the items and their
apiVersion, or BadRequest for what is not JSON or neither an EventList nor an Event. Parsing
every event into Python objects and encoding it again took most of a relay worker's time
(issue 8).
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
from msgspec import Raw

from audit_common import json_text
from audit_common.errors import BadRequest

DEFAULT_API_VERSION = "audit.k8s.io/v1"
API_VERSIONS = ("audit.k8s.io/v1", "audit.k8s.io/v1beta1")


class EventListEnvelope(msgspec.Struct):
    kind: Any = None
    apiVersion: Any = None
    items: list[Raw] | None = None


_ENVELOPE = msgspec.json.Decoder(EventListEnvelope)


def split(body: bytes) -> tuple[list[Any], str]:
    """The items of an EventList or single Event body and their apiVersion.

    The items of an EventList are ``msgspec.Raw`` when msgspec (or, for JSON orjson refuses,
    ``json_text``) could cut them out, parsed otherwise. Called by the webhook handler. Raises
    BadRequest when the body is not JSON, or neither an EventList nor an Event.
    """
    envelope = _raw_event_list(body)
    if envelope is not None:
        return items_of(
            {"kind": "EventList", "apiVersion": envelope.apiVersion, "items": envelope.items}
        )
    document, by_grammar = _document(body)
    items, api_version = items_of(document)
    if by_grammar:
        # Valid JSON that orjson refuses: each item as its own bytes, for build to keep them.
        event_list = document.get("kind") == "EventList"
        raw = json_text.event_list_items(body) if event_list else [body.strip()]
        if raw is not None and len(raw) == len(items):
            items = [Raw(item) for item in raw]
    return items, api_version


def parse_json(body: bytes) -> Any:
    """The JSON document in ``body``: as orjson reads it, or, where orjson refuses valid JSON
    (RFC 8259), as ``json_text.loads`` does. Raises BadRequest naming orjson's complaint."""
    return _document(body)[0]


def _document(body: bytes) -> tuple[Any, bool]:
    """``parse_json``'s document, and whether only the grammar's own parser could read it."""
    if not body.strip():
        raise BadRequest("empty body: expected an audit EventList or Event")
    try:
        return orjson.loads(body), False
    except orjson.JSONDecodeError as exc:
        try:
            return json_text.loads(body), True
        except (ValueError, RecursionError):
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

    None for anything but an EventList of valid UTF-8 that msgspec reads (it refuses a lone
    surrogate escape even where it skips, and checks UTF-8 only where it decodes); never
    raises.
    """
    if not _is_utf8(body):
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
