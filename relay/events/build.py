"""Audit events at the JSON edge: what kube-apiserver posts, and the Kafka records made of it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from msgspec import Raw

from audit_common import json_text
from audit_common.headers import (
    EVENT_HEADERS,
    SCHEMA_VERSION,
    SCHEMA_VERSION_HEADER,
)
from relay.events import raw_fields
from relay.events.clearance import clear
from relay.events.dead_letters import dead_letter
from relay.events.records import EVENTS, OutboundRecord
from relay.events.split import API_VERSIONS

REQUIRED_STRINGS = ("auditID", "stage", "verb", "level", "requestURI", "stageTimestamp")
TRUNCATED_ANNOTATION = "audit.k8s.io/truncated"
# How far ahead of the relay's clock a stageTimestamp may be and still stamp its record: clock
# skew between the apiserver and the relay, well inside the brokers' default hour.
MAX_AHEAD_MS = 10 * 60 * 1000
_VERSION = (SCHEMA_VERSION_HEADER, SCHEMA_VERSION)

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


def headers_of(*values: Any) -> list[tuple[str, bytes]]:
    """The schema version, then ``values`` in the order of ``EVENT_HEADERS``, but those not a
    non-empty str."""
    return [
        _VERSION,
        *(
            (name, value.encode())
            for name, value in zip(EVENT_HEADERS, values, strict=True)
            if isinstance(value, str) and value
        ),
    ]


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
    """Turn the items of one request into records: one per event, invalid items dead-lettered.

    ``fits`` says whether an encoded value is within the broker's message limit; events that do
    not fit lose their request/response objects rather than being dropped. Each entry of
    ``items`` is replaced by None once its record is built, so that the parsed events of a
    large request are freed at once rather than held while it waits for Kafka's acks. Items
    that are ``msgspec.Raw`` (``relay.events.split``) are published as their own bytes when
    ``passed_through`` can, and parsed otherwise (with a ``transform`` only when
    ``may_transform`` says it would not change them); a parsed item that nothing changed is
    still published as its own bytes, so every number and escape stays as it was sent.
    """
    batch = Batch()
    for index, item in enumerate(items):
        items[index] = None  # ``item`` keeps it alive until its record is built
        raw: bytes | None = None
        if isinstance(item, Raw):
            record = passed_through(item, api_version, cluster, fits, transform, may_transform)
            if record is not None:
                batch.records.append(record)
                batch.accepted += 1
                continue
            raw = bytes(item)
        # A broken event can carry a Secret as well as a valid one: what the redactor cannot
        # read, no dead letter may keep.
        cleared = clear(raw if raw is not None else item, transform)
        if cleared.unreadable is not None:
            withheld = dead_letter(
                raw or b"",
                cleared.unreadable,
                cluster,
                dead_letter_limit,
                withhold=cleared.withhold,
            )
            batch.records.append(withheld)
            batch.dead_lettered += 1
            continue
        item, changed = cleared.item, cleared.changed
        if changed:
            batch.transformed += 1
        # The bytes as received, where nothing changed them: every number and escape as sent.
        unchanged = raw if raw is not None and not changed else None
        reason = invalid_reason(item)
        if reason is not None:
            try:
                kept = unchanged if unchanged is not None else dumps(item)
            except RecursionError:
                kept, reason = b"", f"{reason}; nested too deeply to keep"
            batch.records.append(dead_letter(kept, reason, cluster, dead_letter_limit))
            batch.dead_lettered += 1
            continue
        version = item.get("apiVersion") if item.get("apiVersion") in API_VERSIONS else api_version
        try:
            if unchanged is not None and "kind" not in item and "apiVersion" not in item:
                value = raw_fields.with_envelope(json_text.one_line(unchanged), version)
            else:
                value = encode_event(item, version)
        except RecursionError:
            value = b""  # objects nested too deeply to encode: stripped like oversized ones
        key = item["auditID"].encode()
        headers = tuple(event_headers(item, version, cluster))
        if not value or not fits(value, key, headers):
            try:
                value = encode_event(strip_objects(item), version)
            except RecursionError:  # nested as deeply elsewhere: nothing of it can be kept
                value, reason = b"", "nested too deeply to encode, even without its objects"
            else:
                reason = "too large for Kafka, even without its objects"
            if not value or not fits(value, key, headers):
                batch.records.append(dead_letter(value, reason, cluster, dead_letter_limit))
                batch.dead_lettered += 1
                continue
            batch.truncated += 1
        batch.records.append(
            OutboundRecord(EVENTS, value, key, headers, kafka_timestamp(item["stageTimestamp"]))
        )
        batch.accepted += 1
    return batch


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
