"""Audit events as rows of ``audit_events``: the columns the store is queried by, plus the event."""

from __future__ import annotations

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
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Row = tuple[Any, ...]


def _status_code(text: str | None) -> int | None:
    """An HTTP status as an integer; None for anything else (it must fit the integer column)."""
    if text is None or not text.isdigit() or len(text) > 3:
        return None
    return int(text)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, Mapping):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


def storable(event: ConsumedEvent) -> ConsumedEvent:
    """``event`` without NUL characters, which PostgreSQL text and jsonb cannot hold.

    A request URI or object name with ``%00`` would otherwise fail its batch on every retry.
    """
    if b"\\u0000" not in event.raw:
        return event
    return event.with_data(_without_nul(event.data))


def row(event: ConsumedEvent) -> Row:
    """The values of ``COLUMNS`` for ``event`` (already ``storable``)."""
    received = parse_timestamp(event.request_received_timestamp)
    object_ref = event.data.get("objectRef")
    api_group = object_ref.get("apiGroup") if isinstance(object_ref, Mapping) else None
    return (
        event.cluster or "",
        event.audit_id,
        event.stage or "",
        parse_timestamp(event.stage_timestamp) or received or EPOCH,
        received,
        event.level,
        event.verb,
        event.username,
        list(event.groups),
        list(event.source_ips),
        event.user_agent,
        event.impersonated_user,
        event.namespace,
        event.resource,
        event.subresource,
        event.name,
        api_group if isinstance(api_group, str) else None,
        event.request_uri,
        _status_code(event.response_code),
        event.decision,
        event.reason,
        event.raw.decode("utf-8"),
    )
