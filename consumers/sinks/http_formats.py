"""Request bodies of the http sink (``--http-format``), and what a 2xx answer to them means.

Each document is the audit event's bytes as received, plus ``cluster`` (the relay's cluster
header) when the message had one, since a SIEM fed by many clusters must tell them apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from audit_common.errors import SinkError
from consumers.events import ConsumedEvent, parse_timestamp

FORMATS = ("ndjson", "json-array", "elasticsearch", "splunk-hec")


@dataclass(frozen=True)
class BodyOptions:
    """What the formats for a product need: the index (Elasticsearch and Splunk) and the
    Splunk sourcetype."""

    index: str | None = None
    sourcetype: str = "kube:apiserver:audit"


def document(event: ConsumedEvent, **extra: str | None) -> bytes:
    """The event's bytes as consumed, with ``cluster`` (and ``extra``) added at the end where
    the event has no such member: every number and escape stays as the apiserver sent it."""
    members = {"cluster": event.cluster, **extra}
    added = b"".join(
        b"," + orjson.dumps(name) + b":" + orjson.dumps(value)
        for name, value in members.items()
        if value is not None and name not in event.data
    )
    raw = event.raw.rstrip()
    return raw[:-1] + added + b"}" if added else raw


def document_id(event: ConsumedEvent) -> str:
    """The event's digest (SHA-256 of the value as published), after its cluster: the key the
    postgres sink and the deduplicator use. Every copy of an event has it, so a re-sent batch
    creates nothing twice; two distinct events sharing auditID, stage and stageTimestamp
    (clients set ``Audit-ID`` themselves) have different ones and are both kept."""
    return f"{event.cluster or ''}:{event.digest.hex()}"


def _ndjson(events: Sequence[ConsumedEvent], options: BodyOptions) -> bytes:
    return b"".join(document(event) + b"\n" for event in events)


def _json_array(events: Sequence[ConsumedEvent], options: BodyOptions) -> bytes:
    return b"[" + b",".join(document(event) for event in events) + b"]"


def _elasticsearch(events: Sequence[ConsumedEvent], options: BodyOptions) -> bytes:
    """A ``_bulk`` body of ``create`` actions: data streams accept them, and a repeat is a 409."""
    lines = []
    for event in events:
        action: dict[str, str] = {"_id": document_id(event)}
        if options.index:
            action["_index"] = options.index
        source = document(event, **{"@timestamp": event.stage_timestamp})
        lines.append(orjson.dumps({"create": action}) + b"\n" + source + b"\n")
    return b"".join(lines)


def _splunk_hec(events: Sequence[ConsumedEvent], options: BodyOptions) -> bytes:
    """HTTP Event Collector events, one JSON object after the other (``/services/collector``)."""
    lines = []
    for event in events:
        stamp = parse_timestamp(event.stage_timestamp)
        envelope: dict[str, Any] = {"source": "kube-audit-relay", "sourcetype": options.sourcetype}
        if stamp is not None:
            envelope["time"] = round(stamp.timestamp(), 6)
        if options.index:
            envelope["index"] = options.index
        if event.cluster:
            envelope["fields"] = {"cluster": event.cluster}
        head = orjson.dumps(envelope)[:-1]
        lines.append(head + b',"event":' + document(event) + b"}\n")
    return b"".join(lines)


_ENCODERS = {
    "ndjson": _ndjson,
    "json-array": _json_array,
    "elasticsearch": _elasticsearch,
    "splunk-hec": _splunk_hec,
}
CONTENT_TYPES = {
    "ndjson": "application/x-ndjson",
    "json-array": "application/json",
    "elasticsearch": "application/x-ndjson",
    "splunk-hec": "application/json",
}


def encode(body_format: str, events: Sequence[ConsumedEvent], options: BodyOptions) -> bytes:
    return _ENCODERS[body_format](events, options)


def refused_documents(body_format: str, answer: bytes) -> list[tuple[int, str]]:
    """Look inside a 2xx answer: Elasticsearch reports each document's fate in the body.

    Returns the positions in the batch of the documents refused for good (a mapping error), each
    with the reason; a document that exists already (409: this batch was sent before) counts as
    written. Raises SinkError when some were refused for now (429, 5xx): the batch is sent
    again, and what it created already is a 409 then.
    """
    if body_format != "elasticsearch":
        return []
    try:
        result = orjson.loads(answer)
    except orjson.JSONDecodeError as exc:
        raise SinkError(f"the _bulk answer is not JSON: {exc}") from exc
    if not isinstance(result, Mapping) or not result.get("errors"):
        return []
    refused: list[tuple[int, str]] = []
    retriable = 0
    for position, item in enumerate(result.get("items") or []):
        outcome: Any = next(iter(item.values()), {}) if isinstance(item, Mapping) else {}
        status = int(outcome.get("status", 0))
        if status == 429 or status >= 500:
            retriable += 1
        elif status not in (200, 201, 409):
            error = orjson.dumps(outcome.get("error")).decode()
            refused.append((position, f"_bulk refused the document with {status}: {error}"))
    if retriable:
        raise SinkError(f"_bulk refused {retriable} documents for now (429 or 5xx)")
    return refused
