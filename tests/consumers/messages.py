"""Kafka messages as the relay publishes them, of tests.support.events, for consumer tests."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from relay.events.build import encode_event, event_headers, timestamp_ms
from relay.events.split import DEFAULT_API_VERSION
from tests.support.events import audit_events


def with_fresh_ids(count: int) -> list[dict[str, Any]]:
    """``count`` events of tests.support.events (cycled) as a live cluster would send them now:
    each with its own new auditID and current timestamps (Kafka time retention deletes records
    stamped long ago)."""
    made = audit_events()
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    events = []
    for index in range(count):
        event = copy.deepcopy(made[index % len(made)])
        event["auditID"] = str(uuid.uuid4())
        event["requestReceivedTimestamp"] = event["stageTimestamp"] = now
        events.append(event)
    return events


async def produce_events(
    bootstrap: str, topic: str, events: Sequence[dict[str, Any]], *, cluster: str = "default"
) -> None:
    """Publish each event as the relay would: value, key, headers, timestamp; await the acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = []
        for event in events:
            api_version = event.get("apiVersion") or DEFAULT_API_VERSION
            stage_timestamp = event.get("stageTimestamp")
            futures.append(
                await producer.send(
                    topic,
                    encode_event(event, api_version),
                    key=event["auditID"].encode(),
                    headers=event_headers(event, api_version, cluster),
                    timestamp_ms=timestamp_ms(stage_timestamp) if stage_timestamp else None,
                )
            )
        for future in futures:
            await future
    finally:
        await producer.stop()


async def produce_raw(bootstrap: str, topic: str, values: Sequence[bytes]) -> None:
    """Publish arbitrary values (for undecodable messages)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


def original_row(event: dict[str, Any], missing: str = "UNKNOWN") -> list[str]:
    """The columns of the original webhook example for ``event``, worked out independently of
    the sink: what a CSV row read back with the csv module must hold."""
    user = event.get("user") or {}
    ref = event.get("objectRef") or {}
    annotations = event.get("annotations") or {}
    ips = ",".join(event.get("sourceIPs") or [])
    return [
        event.get("stageTimestamp", missing),
        event.get("level", missing),
        event.get("stage", missing),
        event.get("requestURI", missing),
        event.get("verb", missing),
        user.get("username", missing),
        ips or missing,
        ref.get("resource", missing),
        ref.get("name", missing),
        annotations.get("authorization.k8s.io/decision", missing),
        annotations.get("authorization.k8s.io/reason", missing),
    ]
