"""Audit events at the JSON edge: what kube-apiserver posts, and the Kafka records made of it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from msgspec import Raw

from audit_common import json_text
from audit_common.headers import (
    ESCAPED_BYTES,
    headers_of,
)
from relay.events import deep_items, raw_fields
from relay.events.clearance import clear
from relay.events.dead_letters import dead_letter
from relay.events.invalid_items import InvalidItem, listing
from relay.events.records import EVENTS, OutboundRecord
from relay.events.split import API_VERSIONS, EscapedItem

REQUIRED_STRINGS = ("auditID", "stage", "verb", "level", "requestURI", "stageTimestamp")
TRUNCATED_ANNOTATION = "audit.k8s.io/truncated"
# How far ahead of the relay's clock a stageTimestamp may be and still stamp its record: clock
# skew between the apiserver and the relay, well inside the brokers' default hour.
MAX_AHEAD_MS = 10 * 60 * 1000

# Called on each valid event before it is encoded (redaction); returns whether it changed it.
EventTransform = Callable[[dict[str, Any]], bool]
# Whether the transform could change an event, from its objectRef's resource and subresource
# ("" when absent) and the JSON of its request and response objects; False lets the event be
# published unparsed.
MayTransform = Callable[[str, str, Sequence[bytes]], bool]
# Whether a record of this value, key and headers is within the broker's message limit
# (``KafkaPublisher.fits``).
Fits = Callable[[bytes, bytes | None, Sequence[tuple[str, bytes]]], bool]


@dataclass
class Batch:
    """The records made of one request body, in order, and what happened to its items."""

    records: list[OutboundRecord] = field(default_factory=list)
    accepted: int = 0
    dead_lettered: int = 0
    truncated: int = 0
    transformed: int = 0


def invalid_reason(item: Any) -> str | None:
    """Why ``item`` is not an audit event we can publish, or None when it is one."""
    if not isinstance(item, dict):
        return f"item is a JSON {type(item).__name__}, not an object"
    for name in REQUIRED_STRINGS:
        if not isinstance(item.get(name), str):
            return f"missing or non-string field {name!r}"
    for name in ("user", "objectRef", "annotations"):
        if name in item and not isinstance(item[name], dict):
            return f"field {name!r} is not an object"
    try:
        timestamp_ms(item["stageTimestamp"])
    except ValueError:
        return f"stageTimestamp {item['stageTimestamp']!r} is not an RFC 3339 time"
    return None


def timestamp_ms(text: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 time such as ``2019-02-06T14:45:25.277756Z``."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def kafka_timestamp(stage_timestamp: str) -> int | None:
    """The record's Kafka timestamp: the stageTimestamp, or None for the producer's clock.

    None for a time before 1970 or more than ``MAX_AHEAD_MS`` ahead of this clock: brokers
    refuse a record stamped further ahead than ``log.message.timestamp.after.max.ms`` (1 h by
    default), and with it the whole batch it shares with other requests, again on every retry
    and spool replay. The value keeps the stageTimestamp. Raises ValueError as ``timestamp_ms``.
    """
    stamp = timestamp_ms(stage_timestamp)
    if stamp < 0 or stamp > time.time() * 1000 + MAX_AHEAD_MS:
        return None
    return stamp


def event_headers(event: dict[str, Any], api_version: str, cluster: str) -> list[tuple[str, bytes]]:
    """The headers consumers filter and route on without decoding the value."""
    object_ref = event.get("objectRef") or {}
    user = event.get("user") or {}
    return headers_of(
        cluster,
        api_version,
        event.get("verb"),
        event.get("stage"),
        event.get("level"),
        object_ref.get("resource"),
        object_ref.get("namespace"),
        user.get("username"),
    )


def encode_event(event: dict[str, Any], api_version: str) -> bytes:
    """The event as a line of the apiserver's audit.log: kind and apiVersion first."""
    return dumps({"kind": "Event", "apiVersion": api_version, **event})


def dumps(value: Any) -> bytes:
    """Compact JSON of a parsed document. Raises RecursionError if nested about 990 deep.

    orjson refuses more than 255 levels of nesting, which orjson.loads accepts (up to 1024),
    and what ``json_text.loads`` gives for valid JSON orjson refuses (numbers kept as text,
    lone surrogates): ``json_text.dumps`` takes over there, so that such a body is not a 500.
    """
    try:
        # orjson's bytes keep the buffer it wrote into (4 KiB and more, RSS included): a copy
        # of its own size keeps a 500-byte event's record at about that, not at 8 KiB.
        return bytes(memoryview(orjson.dumps(value)))
    except orjson.JSONEncodeError:
        return json_text.dumps(value)


def strip_objects(event: dict[str, Any]) -> dict[str, Any]:
    """A copy without request/response objects, annotated as the truncate backend does."""
    stripped = {k: v for k, v in event.items() if k not in ("requestObject", "responseObject")}
    stripped["annotations"] = {**(event.get("annotations") or {}), TRUNCATED_ANNOTATION: "true"}
    return stripped


def build_batch(
    items: list[Any],
    api_version: str,
    cluster: str,
    *,
    fits: Fits,
    dead_letter_limit: int,
    transform: EventTransform | None = None,
    may_transform: MayTransform | None = None,
) -> Batch:
    """Turn the items of one request into records: one per event, and one dead letter listing
    the invalid items (``relay.events.invalid_items``), after the events.

    ``fits`` says whether an encoded value is within the broker's message limit; events that do
    not fit lose their request/response objects rather than being dropped. Each entry of
    ``items`` is replaced by None once its record is built, so that the parsed events of a
    large request are freed at once rather than held while it waits for Kafka's acks. Items
    that are ``msgspec.Raw`` (``relay.events.split``) are published as their own bytes when
    ``passed_through`` can, and parsed otherwise (with a ``transform`` only when
    ``may_transform`` says it would not change them); a parsed item that nothing changed is
    still published as its own bytes, so every number and escape stays as it was sent. An item
    too deep to parse is read by ``relay.events.deep_items``, and withheld (``withheld``) when
    the transform would have to read it. An ``EscapedItem``'s record says how many bytes of it
    were escaped (header ``escaped-bytes``).
    """
    batch = Batch()
    context = _Context(api_version, cluster, fits, transform, may_transform, batch)
    invalid: list[InvalidItem] = []
    kept = 0  # bytes of invalid items held for their dead letter: no more than it can list
    for index, item in enumerate(items):
        items[index] = None  # ``item`` keeps it alive until its record is built
        escaped = 0
        if isinstance(item, EscapedItem):
            escaped = item.escaped_bytes
            item = item.raw
        built: OutboundRecord | InvalidItem | _Withheld | None = None
        if isinstance(item, Raw):  # the way of nearly every item
            built = passed_through(item, api_version, cluster, fits, transform, may_transform)
        if built is None:
            built = _record(item, context)
        if isinstance(built, OutboundRecord):
            if escaped:
                escaped_header = (ESCAPED_BYTES, str(escaped).encode())
                built = replace(built, headers=(*built.headers, escaped_header))
            batch.records.append(built)
            batch.accepted += 1
            continue
        batch.dead_lettered += 1
        if isinstance(built, _Withheld):
            batch.records.append(withheld(built.raw, built.reason, cluster, dead_letter_limit))
        else:
            held = len(built.content or b"")
            content = built.content if kept + held <= dead_letter_limit else None
            kept += held if content is not None else 0
            # Each byte escaped takes three: the size as received.
            size = held - 2 * escaped
            invalid.append(
                replace(built, index=index, content=content, escaped_bytes=escaped, size=size)
            )
    if invalid:
        value, reason = listing(invalid, len(items), dead_letter_limit)
        batch.records.append(dead_letter(value, reason, cluster, dead_letter_limit))
    return batch


@dataclass(frozen=True, slots=True)
class _Withheld:
    raw: bytes
    reason: str


def withheld(raw: bytes, reason: str, cluster: str, limit: int) -> OutboundRecord:
    """The dead letter of an item the redactor would have to read and cannot: nothing of its
    content, a summary (``relay.events.dead_letters``). The one place that writes such a
    record."""
    return dead_letter(raw, reason, cluster, limit, withhold=True)


@dataclass(frozen=True, slots=True)
class _Context:
    """What ``build_batch`` was given, for the work on each item; ``batch`` counts it."""

    api_version: str
    cluster: str
    fits: Fits
    transform: EventTransform | None
    may_transform: MayTransform | None
    batch: Batch


def _record(item: Any, context: _Context) -> OutboundRecord | InvalidItem | _Withheld:
    """``build_batch``'s work on an item ``passed_through`` could not publish as it is (its
    index left to the caller)."""
    raw = bytes(item) if isinstance(item, Raw) else None
    # A broken event can carry a Secret as well as a valid one: redacted before it is kept.
    cleared = clear(raw if raw is not None else item, context.transform)
    if raw is not None and cleared.unreadable is not None:
        return _deep_record(raw, context)  # not JSON, or too deep for the parsers
    item, changed = cleared.item, cleared.changed
    if changed:
        context.batch.transformed += 1
    # The bytes as received, where nothing changed them: every number and escape as sent.
    unchanged = raw if raw is not None and not changed else None
    reason = invalid_reason(item)
    if reason is not None:
        try:
            kept = unchanged if unchanged is not None else dumps(item)
        except RecursionError:
            kept, reason = b"", f"{reason}; nested too deeply to keep"
        return InvalidItem(-1, reason, kept)
    own = item.get("apiVersion")
    version = own if isinstance(own, str) and own in API_VERSIONS else context.api_version
    try:
        if unchanged is not None and "kind" not in item and "apiVersion" not in item:
            value = raw_fields.with_envelope(json_text.one_line(unchanged), version)
        else:
            value = encode_event(item, version)
    except RecursionError:
        value = b""  # objects nested too deeply to encode: stripped like oversized ones
    return _sized(item, value, version, context)


def _deep_record(raw: bytes, context: _Context) -> OutboundRecord | InvalidItem | _Withheld:
    """The record of an item no parser reads whole: its shallow fields read by
    ``deep_items``, its own bytes published."""
    try:
        deep = deep_items.read(raw)
    except ValueError as exc:
        return _unread(raw, f"item is not a JSON object: {exc}", context)
    event = deep.fields
    reason = invalid_reason(event)
    if reason is not None:
        return _unread(raw, reason, context)
    ref = event.get("objectRef") or {}
    resource, subresource = ref.get("resource"), ref.get("subresource")
    may_transform = context.may_transform
    if context.transform is not None and (
        may_transform is None
        or may_transform(
            resource if isinstance(resource, str) else "",
            subresource if isinstance(subresource, str) else "",
            deep.objects(),
        )
    ):
        return _Withheld(raw, "nested too deeply for the redactor to read, and may hold a Secret")
    own = event.get("apiVersion")
    version = own if isinstance(own, str) and own in API_VERSIONS else context.api_version
    return _sized(event, deep.value(version), version, context)


def _unread(raw: bytes, reason: str, context: _Context) -> InvalidItem | _Withheld:
    """An invalid item whose objects the redactor did not read: withheld while it is on, since
    they may hold a Secret; listed with its bytes otherwise."""
    if context.transform is not None:
        return _Withheld(raw, reason)
    return InvalidItem(-1, reason, raw)


def _sized(
    event: dict[str, Any], value: bytes, version: str, context: _Context
) -> OutboundRecord | InvalidItem:
    """The event's record of ``value``; where that is over the broker's limit with its key and
    headers (or empty: too deep to encode), without its objects as the apiserver's truncate
    backend does; an invalid item when even that does not fit."""
    key = event["auditID"].encode()
    headers = tuple(event_headers(event, version, context.cluster))
    if not value or not context.fits(value, key, headers):
        try:
            value = encode_event(strip_objects(event), version)
        except RecursionError:  # nested as deeply elsewhere: nothing of it can be kept
            return InvalidItem(-1, "nested too deeply to encode, even without its objects", b"")
        if not context.fits(value, key, headers):
            return InvalidItem(-1, "too large for Kafka, even without its objects", value)
        context.batch.truncated += 1
    return OutboundRecord(EVENTS, value, key, headers, kafka_timestamp(event["stageTimestamp"]))


def passed_through(
    raw: Raw,
    api_version: str,
    cluster: str,
    fits: Fits,
    transform: EventTransform | None,
    may_transform: MayTransform | None,
) -> OutboundRecord | None:
    """The record of a valid event whose value is its own bytes, or None to parse it in full.

    None also when the event may need ``transform``, or would not fit: the full path redacts and
    truncates it.
    """
    passable = raw_fields.passable(raw, api_version)
    if passable is None:
        return None
    fields, value = passable
    ref = raw_fields.object_ref(fields)
    if transform is not None and (
        may_transform is None
        or may_transform(ref.resource or "", ref.subresource or "", raw_fields.bodies(fields))
    ):
        return None
    try:
        timestamp = kafka_timestamp(fields.stageTimestamp)
    except ValueError:
        return None
    username = raw_fields.user(fields).username
    headers = headers_of(
        cluster,
        api_version,
        fields.verb,
        fields.stage,
        fields.level,
        ref.resource,
        ref.namespace,
        username,
    )
    key = fields.auditID.encode()
    if not fits(value, key, headers):
        return None
    return OutboundRecord(EVENTS, value, key, tuple(headers), timestamp)
