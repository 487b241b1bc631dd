"""Audit events as consumers see them: decoded from Kafka messages, with typed field access.

Filters and the CSV sink read fields through the properties of ``ConsumedEvent`` so that every
consumer agrees on where a field lives in the event (``user.username``, ``objectRef.resource``...).

Decoding is narrow (``consumers.event_json``): the properties read only the top-level fields
they need; sinks that need the whole event read ``data``, decoded on first use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from audit_common.errors import InvalidEvent
from audit_common.headers import CLUSTER
from consumers.event_json import project, top_fields, whole

DECISION_ANNOTATION = "authorization.k8s.io/decision"
REASON_ANNOTATION = "authorization.k8s.io/reason"


@dataclass(frozen=True, slots=True)
class ConsumedEvent:
    """One audit event decoded from one Kafka message; what filters and sinks receive.

    ``raw`` is the message value exactly as consumed (an audit.log line: ``kind``,
    ``apiVersion`` and the fields as the apiserver sent them); ``data`` is that event as an
    object, decoded on first use; ``cluster`` is the relay's ``cluster`` header, None when
    absent. Built by ``decode``, or by ``with_data`` for a sink's cleaned copy.
    """

    raw: bytes
    cluster: str | None
    topic: str
    partition: int
    offset: int
    top: Mapping[str, Any] = field(repr=False, compare=False)
    _data: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def digest(self) -> bytes:
        """SHA-256 of the value as published: what a repeat shares and a distinct event does not
        (auditID, stage and stageTimestamp do not identify an event)."""
        return hashlib.sha256(self.raw).digest()

    @property
    def data(self) -> Mapping[str, Any]:
        """The whole event, as ``orjson.loads(raw)`` gives it; decoded once, on first use."""
        if self._data is None:
            object.__setattr__(self, "_data", whole(self.raw))
        assert self._data is not None
        return self._data

    def with_data(self, data: Mapping[str, Any]) -> ConsumedEvent:
        """The same message carrying ``data`` instead (re-encoded as ``raw``); for a sink that
        must clean events before storing them."""
        return ConsumedEvent(
            orjson.dumps(data),
            self.cluster,
            self.topic,
            self.partition,
            self.offset,
            project(data),
            data,
        )

    def _text(self, *path: str) -> str | None:
        value: Any = self.top
        for key in path:
            if not isinstance(value, Mapping):
                return None
            value = value.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return None

    def _texts(self, *path: str) -> tuple[str, ...]:
        value: Any = self.top
        for key in path:
            if not isinstance(value, Mapping):
                return ()
            value = value.get(key)
        if not isinstance(value, list):
            return ()
        return tuple(item for item in value if isinstance(item, str))

    @property
    def audit_id(self) -> str:
        return str(self.top["auditID"])

    @property
    def stage(self) -> str | None:
        return self._text("stage")

    @property
    def stage_timestamp(self) -> str | None:
        return self._text("stageTimestamp")

    @property
    def request_received_timestamp(self) -> str | None:
        return self._text("requestReceivedTimestamp")

    @property
    def level(self) -> str | None:
        return self._text("level")

    @property
    def verb(self) -> str | None:
        return self._text("verb")

    @property
    def request_uri(self) -> str | None:
        return self._text("requestURI")

    @property
    def user_agent(self) -> str | None:
        return self._text("userAgent")

    @property
    def username(self) -> str | None:
        return self._text("user", "username")

    @property
    def groups(self) -> tuple[str, ...]:
        return self._texts("user", "groups")

    @property
    def impersonated_user(self) -> str | None:
        return self._text("impersonatedUser", "username")

    @property
    def source_ips(self) -> tuple[str, ...]:
        return self._texts("sourceIPs")

    @property
    def resource(self) -> str | None:
        return self._text("objectRef", "resource")

    @property
    def subresource(self) -> str | None:
        return self._text("objectRef", "subresource")

    @property
    def name(self) -> str | None:
        return self._text("objectRef", "name")

    @property
    def namespace(self) -> str | None:
        return self._text("objectRef", "namespace")

    @property
    def response_code(self) -> str | None:
        return self._text("responseStatus", "code")

    @property
    def decision(self) -> str | None:
        return self._text("annotations", DECISION_ANNOTATION)

    @property
    def reason(self) -> str | None:
        return self._text("annotations", REASON_ANNOTATION)


def decode(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    *,
    topic: str,
    partition: int,
    offset: int,
) -> ConsumedEvent:
    """Decode one message of the relay's topic.

    Called by the runner for every consumed message. Raises InvalidEvent, with a reason fit for
    the dead-letter header, when the value is not a JSON object with a string auditID.
    """
    if value is None:
        raise InvalidEvent("message has no value")
    top = top_fields(value)
    data = None
    if top is None:
        try:
            data = whole(value)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
            raise InvalidEvent(f"value is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidEvent(f"value is a JSON {type(data).__name__}, not an object")
        top = project(data)
    if not isinstance(top.get("auditID"), str):
        raise InvalidEvent("missing or non-string field 'auditID'")
    cluster = None
    for key, header in headers:
        if key == CLUSTER:
            cluster = header.decode("utf-8", errors="replace")
    return ConsumedEvent(value, cluster, topic, partition, offset, top, data)


def parse_timestamp(text: str | None) -> datetime | None:
    """An RFC 3339 timestamp as the apiserver writes it; None when absent or malformed."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
