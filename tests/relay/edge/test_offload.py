"""Large bodies are split and built in the relay's own threads: the event loop keeps serving."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from audit_common.kafka_connection import KafkaConnection
from relay.edge.app import INLINE_BODY_BYTES, Lifecycle, build_app
from relay.edge.offload import Offload
from relay.events.build import EventTransform
from relay.events.records import DEAD_LETTER, EVENTS, OutboundRecord
from relay.kafka.publisher import KafkaPublisher, PublisherSettings
from relay.metrics import RelayMetrics
from relay.settings import RelaySettings
from tests.support.corpus import corpus_events, event_list
from tests.support.net import wait_until


def events(prefix: str, count: int) -> list[dict[str, Any]]:
    corpus = corpus_events()
    return [
        {**corpus[index % len(corpus)], "auditID": f"{prefix}-{index:05d}"}
        for index in range(count)
    ]


def serve(transform: EventTransform | None = None) -> tuple[TestClient, list[OutboundRecord]]:
    """The relay's app in-process; its deliver keeps what it is given, in order."""
    settings = RelaySettings(publisher=PublisherSettings(KafkaConnection()))
    delivered: list[OutboundRecord] = []

    async def deliver(records: Sequence[OutboundRecord]) -> None:
        delivered.extend(records)

    # Never started: deliver stands in for it, and fits needs no connection.
    publisher = KafkaPublisher(settings.publisher, RelayMetrics())
    app = build_app(
        settings, publisher, RelayMetrics(), Lifecycle(), deliver=deliver, transform=transform
    )
    return TestClient(TestServer(app)), delivered


async def test_a_small_request_is_answered_while_a_large_body_is_built() -> None:
    building = threading.Event()
    small_answered = threading.Event()

    def transform(event: dict[str, Any]) -> bool:
        if event["auditID"] == "large-00000":
            building.set()
            # On the event loop this would wait for an answer that the blocked loop never sends.
            if not small_answered.wait(timeout=20):
                raise RuntimeError("the small request was not answered while the body was built")
        return False

    large = event_list(events("large", 600))
    assert len(large) > INLINE_BODY_BYTES
    client, delivered = serve(transform)
    async with client:
        posting = asyncio.create_task(client.post("/api/audits", data=large))
        await wait_until(building.is_set, timeout=10, what="the large body being built")
        small = await client.post("/api/audits", data=event_list(events("small", 3)))
        assert (small.status, await small.json()) == (200, {"accepted": 3, "deadLettered": 0})
        small_answered.set()
        answer = await posting
        assert (answer.status, await answer.json()) == (200, {"accepted": 600, "deadLettered": 0})
    keys = [record.key for record in delivered]
    assert keys == [f"small-{n:05d}".encode() for n in range(3)] + [
        f"large-{n:05d}".encode() for n in range(600)
    ]


async def test_a_large_body_that_is_no_event_list_is_400_and_dead_lettered() -> None:
    body = b'{"kind": "Pod", "spec": "' + b"x" * INLINE_BODY_BYTES + b'"}'
    client, delivered = serve()
    async with client:
        response = await client.post("/api/audits", data=body)
        assert response.status == 400
        assert "neither EventList nor Event" in (await response.json())["error"]
    [record] = delivered
    # Redaction is on and read none of it: its size and digest are kept, not its bytes.
    assert record.topic == DEAD_LETTER and orjson.loads(record.value)["size"] == len(body)


async def test_a_large_body_is_built_as_a_small_one() -> None:
    items = events("same", 400)
    client, delivered = serve()
    async with client:
        for body in (event_list(items[:5]), event_list(items)):
            response = await client.post("/api/audits", data=body)
            assert response.status == 200
    small, large = delivered[:5], delivered[5:]
    assert len(event_list(items)) > INLINE_BODY_BYTES
    assert large[:5] == small and all(record.topic == EVENTS for record in large)


async def test_offload_runs_work_between_start_and_stop() -> None:
    offload = Offload()
    await offload.stop()
    await offload.start()
    await offload.start()
    assert await offload.run(threading.get_ident) != threading.get_ident()
    await offload.stop()
    await offload.stop()
    with pytest.raises(RuntimeError):
        await offload.run(threading.get_ident)
