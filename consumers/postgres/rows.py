"""Audit events as rows of ``audit_events``: the columns the store is queried by, plus the event."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from consumers.events import ConsumedEvent, parse_timestamp

# The columns the sink inserts, in the order of ``row``'s values.
COLUMNS = (
    "cluster",
    "audit_id",
    "stage",
    "stage_timestamp",
    "request_received_timestamp",
    "level",
    "verb",
    "username",
    "groups",
    "source_ips",
    "user_agent",
    "impersonated_user",
    "namespace",
    "resource",
    "subresource",
    "name",
    "api_group",
    "request_uri",
    "response_code",
    "decision",
    "reason",
    "event",
    "event_digest",
    "event_text",
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Row = tuple[Any, ...]


def _status_code(text: str | None) -> int | None:
    """An HTTP status as an integer; None for anything else (it must fit the integer column)."""
    if text is None or not text.isdigit() or len(text) > 3:
        return None
    return int(text)


# What PostgreSQL text cannot hold: NUL, and UTF-16 surrogates (JSON escapes that are no
# Unicode character, which a decoded string keeps as lone code points).
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable_text(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE.sub(lambda match: "" if match[0] == "\x00" else "\ufffd", value)
    if isinstance(value, Mapping):
        return {_storable_text(key): _storable_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable_text(item) for item in value]
    return value


def storable(event: ConsumedEvent) -> ConsumedEvent:
    """``event`` for the columns: NULs dropped and lone surrogates replaced by U+FFFD in the
    top-level fields the columns read, which PostgreSQL text cannot hold.

    A request URI or object name with ``%00`` would otherwise fail its batch on every retry.
    Only those fields are cleaned, never the whole event: re-encoding an event nested deeper
    than orjson writes (255) raised TypeError on every retry. The event itself is stored as
    received, in ``event_text`` when jsonb cannot take it. Raises RecursionError for top-level
    fields nested deeper than Python goes (the sink dead-letters that event).
    """
    if _UNSTORABLE_ESCAPE.search(event.raw) is None:
        return event
    return dataclasses.replace(event, top=_storable_text(event.top))


def row(event: ConsumedEvent) -> Row:
    """The values of ``COLUMNS`` for ``event`` as consumed.

    The event goes to the jsonb column, or, when it holds an escape jsonb refuses (``\\u0000``,
    a lone surrogate), to ``event_text``; ``as_text`` moves it there for any other reason.
    Raises what ``storable`` raises.
    """
    columns = storable(event)
    received = parse_timestamp(columns.request_received_timestamp)
    object_ref = columns.top.get("objectRef")
    api_group = object_ref.get("apiGroup") if isinstance(object_ref, Mapping) else None
    text = event.raw.decode("utf-8")
    jsonb = columns is event
    return (
        columns.cluster or "",
        columns.audit_id,
        columns.stage or "",
        parse_timestamp(columns.stage_timestamp) or received or EPOCH,
        received,
        columns.level,
        columns.verb,
        columns.username,
        list(columns.groups),
        list(columns.source_ips),
        columns.user_agent,
        columns.impersonated_user,
        columns.namespace,
        columns.resource,
        columns.subresource,
        columns.name,
        api_group if isinstance(api_group, str) else None,
        columns.request_uri,
        _status_code(columns.response_code),
        columns.decision,
        columns.reason,
        text if jsonb else None,
        event.digest,
        None if jsonb else text,
    )


def as_text(values: Row) -> Row:
    """``values`` with the event moved from the jsonb column to ``event_text``."""
    moved = list(values)
    moved[_EVENT], moved[_EVENT_TEXT] = None, values[_EVENT]
    return tuple(moved)


def jsonb_event(values: Row) -> str | None:
    """The event text ``values`` put in the jsonb column, if any."""
    event: str | None = values[_EVENT]
    return event


_EVENT = COLUMNS.index("event")
_EVENT_TEXT = COLUMNS.index("event_text")
