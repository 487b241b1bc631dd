"""The in-flight bound: past it, 503 with Retry-After before the body is read or its records
built; 413 for a request whose records alone are over it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp.test_utils import TestClient, TestServer

from audit_common.kafka_connection import KafkaConnection
from relay.edge.app import Lifecycle, build_app
from relay.edge.backpressure import RECORD_BYTES, inflight_limit
from relay.events.records import OutboundRecord
from relay.kafka.publisher import KafkaPublisher, PublisherSettings
from relay.metrics import RelayMetrics
from relay.settings import RelaySettings
from tests.support.corpus import corpus_events, event_list
from tests.support.net import wait_until


@dataclass
class Served:
    """The relay's app in-process behind the bound; deliver waits for ``release``."""

    client: TestClient
    metrics: RelayMetrics
    release: asyncio.Event
    delivered: list[int]

    def held(self) -> float | None:
        return self.metrics.registry.get_sample_value("relay_request_bytes_in_flight")


def serve(bound: int, unknown_size: int, unanswered: Callable[[], int] = lambda: 0) -> Served:
    settings = RelaySettings(publisher=PublisherSettings(KafkaConnection()))
    metrics = RelayMetrics()
    release = asyncio.Event()
    delivered: list[int] = []

    async def deliver(records: Sequence[OutboundRecord]) -> None:
        await release.wait()
        delivered.append(len(records))

    limit = inflight_limit(bound, settings.path, unknown_size, metrics, unanswered=unanswered)
    # Never started: deliver stands in for it.
    publisher = KafkaPublisher(settings.publisher, RelayMetrics())
    app = build_app(settings, publisher, metrics, Lifecycle(), deliver=deliver, middlewares=[limit])
    return Served(TestClient(TestServer(app)), metrics, release, delivered)


PATH = RelaySettings(publisher=PublisherSettings(KafkaConnection())).path


async def test_requests_over_the_bound_get_503_and_the_rest_go_through() -> None:
    body = event_list(corpus_events()[:20])
    held_each = 2 * len(body) + 20 * RECORD_BYTES  # its body, and its 20 records: a copy and more
    served = serve(held_each * 2, 64 << 20)
    async with served.client as client:
        held = [asyncio.create_task(client.post(PATH, data=body)) for _ in range(2)]
        await wait_until(
            lambda: served.held() == 2 * held_each, timeout=5, what="two requests in flight"
        )
        refused = await client.post(PATH, data=body)
        assert refused.status == 503
        assert refused.headers["Retry-After"].isdigit()
        assert "in flight" in (await refused.json())["error"]
        served.release.set()
        for task in held:
            assert (await task).status == 200
        assert served.delivered == [20, 20]
        assert (await client.post(PATH, data=body)).status == 200
        assert served.held() == 0


async def test_bytes_held_for_answered_requests_count_against_the_bound() -> None:
    """Records a producer still holds after their request got its 503 take from the bound."""
    body = event_list(corpus_events()[:20])
    bound = 2 * len(body) + 20 * RECORD_BYTES  # one request, its body and its records
    unanswered = bound - len(body) + 1
    served = serve(bound, 64 << 20, unanswered=lambda: unanswered)
    served.release.set()
    async with served.client as client:
        refused = await client.post(PATH, data=body)
        assert refused.status == 503
        assert "held for Kafka" in (await refused.json())["error"]
        unanswered = 0  # the abandoned producer failed its batches
        assert (await client.post(PATH, data=body)).status == 200


async def test_the_records_a_request_builds_count_against_the_bound() -> None:
    events = event_list(corpus_events()[:20])
    tiny = b'{"kind":"EventList","items":[' + b",".join([b"1"] * 300) + b"]}"
    held_first = 2 * len(events) + 20 * RECORD_BYTES
    served = serve(held_first + 2 * len(tiny) + 300 * RECORD_BYTES - 1, 1 << 20)
    async with served.client as client:
        first = asyncio.create_task(client.post(PATH, data=events))
        await wait_until(
            lambda: served.held() == held_first,
            timeout=5,
            what="the first request's records held",
        )
        # Its body fits beside the first one; the 300 records it would build do not.
        refused = await client.post(PATH, data=tiny)
        assert refused.status == 503 and refused.headers["Retry-After"].isdigit()
        assert "records of this request" in (await refused.json())["error"]
        served.release.set()
        assert (await first).status == 200
        # Alone, it is admitted: its records are within the bound.
        answer = await client.post(PATH, data=tiny)
        assert (answer.status, await answer.json()) == (200, {"accepted": 0, "deadLettered": 300})
        assert served.delivered == [20, 300]
        # Records that alone are over the bound never fit: 413, and nothing built or delivered.
        many = b'{"kind":"EventList","items":[' + b",".join([b"1"] * 2000) + b"]}"
        too_many = await client.post(PATH, data=many)
        assert too_many.status == 413
        assert "--max-inflight-bytes" in (await too_many.json())["error"]
        assert served.delivered == [20, 300]
        assert served.held() == 0
