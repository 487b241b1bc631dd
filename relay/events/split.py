"""Splitting a request body into its events: the first step after the body is received.

An EventList of valid UTF-8 that msgspec reads is decoded with each item kept as its own bytes
(``msgspec.Raw``), for ``relay.events.build`` to pass through as they are: parsing every event
into Python objects and encoding it again took most of a relay worker's time (issue 8). Any
other body is cut into items by JSON's grammar at the byte level (``audit_common.json_scan``),
at any depth and whatever the bytes inside strings, so that one item nothing can read (nested
10,000 deep, bytes that are not UTF-8, not JSON at all) costs only itself: it is read or
dead-lettered alone by ``build``, and the other items are published (issue 22). An item that
is not UTF-8 is escaped (``audit_common.escaped_bytes``) and marked as such.

A body is refused only when no item's end can be told (BadRequest: not JSON, torn, neither an
EventList nor an Event), or when it holds more items than a request may (TooManyItems, 413),
found while decoding or scanning: the items beyond the bound are never built.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import msgspec
import orjson
from msgspec import UNSET, Raw, UnsetType

from audit_common import json_scan
from audit_common.errors import BadRequest
from audit_common.escaped_bytes import escape, is_utf8
from audit_common.json_scan import TooManyItems

DEFAULT_API_VERSION = "audit.k8s.io/v1"
API_VERSIONS = ("audit.k8s.io/v1", "audit.k8s.io/v1beta1")
# Ten times the 400 events of the apiserver's largest webhook batch.
DEFAULT_MAX_ITEMS = 4000


class EscapedItem(NamedTuple):
    """An item that held bytes that are not UTF-8, escaped, and how many bytes were."""

    raw: Raw
    escaped_bytes: int


class EventListEnvelope(msgspec.Struct):
    kind: Any = None
    apiVersion: Any = None
    items: Any = None  # the array of ``_decoder``'s slots


@functools.lru_cache(maxsize=4)
def _decoder(max_items: int) -> msgspec.json.Decoder[EventListEnvelope]:
    """A decoder of an EventList whose items fill ``max_items`` + 1 slots, each a ``Raw``.

    An array-like struct decodes no element past its last field (it skips them, checking they
    are JSON), so a body of a million tiny items builds ``max_items`` + 1 objects, not a million;
    the last slot filled says the request holds too many.
    """
    slots = [(f"i{index}", Raw | UnsetType, UNSET) for index in range(max_items + 1)]
    items = msgspec.defstruct("Items", slots, array_like=True)
    envelope = msgspec.defstruct(
        "Envelope", [("items", items | None, None)], bases=(EventListEnvelope,)
    )
    return msgspec.json.Decoder(envelope)


def split(body: bytes, max_items: int = DEFAULT_MAX_ITEMS) -> tuple[list[Any], str]:
    """The items of an EventList or single Event body and their apiVersion.

    Each item is a ``msgspec.Raw`` of its own bytes (a slice of ``body``, not a copy), or an
    ``EscapedItem`` when it held bytes that are not UTF-8; whether it is an event is for
    ``relay.events.build`` to tell. Called by the webhook handler. Raises BadRequest when the
    body is not JSON around its items, or neither an EventList nor an Event, and TooManyItems
    when it has more than ``max_items`` items.
    """
    envelope = _raw_event_list(body, max_items)
    if envelope is None:
        return _by_grammar(body, max_items)
    if envelope.items is None:
        return [], _api_version(envelope.apiVersion)
    slots = msgspec.structs.astuple(envelope.items)
    if slots[-1] is not UNSET:
        raise TooManyItems(max_items)
    # The items fill the first slots.
    return list(slots[: slots.index(UNSET)]), _api_version(envelope.apiVersion)


def _by_grammar(body: bytes, max_items: int) -> tuple[list[Any], str]:
    """``split`` of a body msgspec refused, by ``json_scan.outline``."""
    if not body or body.isspace():
        raise BadRequest("empty body: expected an audit EventList or Event")
    try:
        found = json_scan.outline(body, max_items)
    except TooManyItems:
        raise
    except ValueError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    kind = _member(body, found, b'"kind"')
    api_version = _api_version(_member(body, found, b'"apiVersion"'))
    if kind == "EventList":
        spans = found.items
        if spans is None and _member(body, found, b'"items"') is not None:
            raise BadRequest("EventList.items is not a list")
        return [_item(body, span) for span in spans or ()], api_version
    if kind == "Event" or (kind is None and b'"auditID"' in found.members):
        return [_item(body, (found.start, found.end))], api_version
    raise BadRequest(f"kind {kind!r} is neither EventList nor Event")


def _member(body: bytes, found: json_scan.Outline, name: bytes) -> Any:
    """The value of the top-level member ``name``, None when absent; BadRequest if no JSON."""
    span = found.members.get(name)
    if span is None:
        return None
    try:
        return orjson.loads(memoryview(body)[span[0] : span[1]])
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {name.decode()} is not: {exc}") from exc


def _item(body: bytes, span: json_scan.Span) -> Raw | EscapedItem:
    item = memoryview(body)[span[0] : span[1]]
    if is_utf8(item):
        return Raw(item)
    escaped, count = escape(item)
    return EscapedItem(Raw(escaped), count)


def _api_version(api_version: Any) -> str:
    if api_version is None:
        return DEFAULT_API_VERSION
    if api_version not in API_VERSIONS:
        raise BadRequest(f"unsupported apiVersion {api_version!r}: expected one of {API_VERSIONS}")
    return str(api_version)


def _raw_event_list(body: bytes, max_items: int) -> EventListEnvelope | None:
    """The envelope of an EventList body with its items raw, or None to split it by grammar.

    None for anything but an EventList of valid UTF-8 that msgspec reads (it refuses a lone
    surrogate escape even where it skips, and checks UTF-8 only where it decodes); never
    raises.
    """
    if not body.isascii() and not is_utf8(body):
        return None
    try:
        envelope = _decoder(max_items).decode(body)
    except (msgspec.DecodeError, RecursionError):  # DecodeError: also a shape not handled here
        return None
    return envelope if envelope.kind == "EventList" else None
