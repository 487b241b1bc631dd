"""The in-flight bound: past it, 503 with Retry-After before the body is read."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp.test_utils import TestClient, TestServer

from audit_common.kafka_connection import KafkaConnection
from relay.edge.app import Lifecycle, build_app
from relay.edge.backpressure import inflight_limit
from relay.events.records import OutboundRecord
from relay.kafka.publisher import KafkaPublisher, PublisherSettings
from relay.metrics import RelayMetrics
from relay.settings import RelaySettings
from tests.support.events import audit_events, event_list
from tests.support.net import wait_until


async def test_requests_over_the_bound_get_503_and_the_rest_go_through() -> None:
    settings = RelaySettings(publisher=PublisherSettings(KafkaConnection()))
    metrics = RelayMetrics()
    release = asyncio.Event()
    delivered: list[int] = []

    async def deliver(records: Sequence[OutboundRecord]) -> None:
        await release.wait()
        delivered.append(len(records))

    body = event_list(audit_events()[:20])
    limit = inflight_limit(
        len(body) * 2, settings.path, settings.max_body_bytes, metrics, unanswered=lambda: 0
    )
    # Never started: deliver stands in for it.
    publisher = KafkaPublisher(settings.publisher, RelayMetrics())
    app = build_app(settings, publisher, metrics, Lifecycle(), deliver=deliver, middlewares=[limit])
    async with TestClient(TestServer(app)) as client:
        held = [asyncio.create_task(client.post(settings.path, data=body)) for _ in range(2)]
        await wait_until(
            lambda: (
                metrics.registry.get_sample_value("relay_request_bytes_in_flight") == 2 * len(body)
            ),
            timeout=5,
            what="two requests in flight",
        )
        refused = await client.post(settings.path, data=body)
        assert refused.status == 503
        assert refused.headers["Retry-After"].isdigit()
        assert "in flight" in (await refused.json())["error"]
        release.set()
        for task in held:
            assert (await task).status == 200
        assert delivered == [20, 20]
        assert (await client.post(settings.path, data=body)).status == 200
        assert metrics.registry.get_sample_value("relay_request_bytes_in_flight") == 0


async def test_bytes_held_for_answered_requests_count_against_the_bound() -> None:
    """Records a producer still holds after their request got its 503 take from the bound."""
    settings = RelaySettings(publisher=PublisherSettings(KafkaConnection()))
    metrics = RelayMetrics()
    body = event_list(audit_events()[:20])
    unanswered = len(body)

    async def deliver(records: Sequence[OutboundRecord]) -> None:
        pass

    limit = inflight_limit(
        len(body) * 3 // 2,
        settings.path,
        settings.max_body_bytes,
        metrics,
        unanswered=lambda: unanswered,
    )
    publisher = KafkaPublisher(settings.publisher, RelayMetrics())
    app = build_app(settings, publisher, metrics, Lifecycle(), deliver=deliver, middlewares=[limit])
    async with TestClient(TestServer(app)) as client:
        refused = await client.post(settings.path, data=body)
        assert refused.status == 503
        assert "held for Kafka" in (await refused.json())["error"]
        unanswered = 0  # the abandoned producer failed its batches
        assert (await client.post(settings.path, data=body)).status == 200
