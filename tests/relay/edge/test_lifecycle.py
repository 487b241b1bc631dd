"""Kafka outages, SIGTERM under load, and several workers: real processes and real signals."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import orjson
import pytest

from tests.support.events import audit_events, event_list
from tests.support.kafka import LocalBroker, read_topic, topic_size
from tests.support.net import wait_until
from tests.support.relay import StartRelay

pytestmark = pytest.mark.integration


def stamped(events: list[dict], tag: str) -> list[dict]:
    """Copies of ``events`` with auditIDs unique to ``tag``, so each can be counted."""
    return [{**event, "auditID": f"{tag}-{index}"} for index, event in enumerate(events)]


async def test_503_with_retry_after_while_kafka_is_down(
    start_relay: StartRelay, http: aiohttp.ClientSession, broker_factory
) -> None:
    broker: LocalBroker = broker_factory()
    relay = await start_relay("--ack-timeout", "2", bootstrap=broker.bootstrap)
    assert (await (await http.post(relay.url, data=event_list(audit_events()[:2]))).json())[
        "accepted"
    ] == 2
    broker.stop()
    async with http.post(
        relay.url, data=event_list(stamped(audit_events()[:3], "down"))
    ) as response:
        assert response.status == 503
        assert response.headers["Retry-After"].isdigit()
        assert "Kafka" in (await response.json())["error"]
    broker.start()

    async def accepted_again() -> bool:
        async with http.post(
            relay.url, data=event_list(stamped(audit_events()[:3], "up"))
        ) as response:
            return response.status == 200

    await wait_until(accepted_again, timeout=60, interval=0.5, what="relay to accept after restart")


async def test_sigterm_under_load_loses_no_acknowledged_event(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay("--shutdown-grace", "15")
    base_events = audit_events()
    acknowledged: set[str] = set()
    answered: list[int] = []

    async def sender(index: int) -> None:
        for round_ in range(1000):
            batch = stamped(base_events, f"s{index}-r{round_}")
            try:
                async with http.post(relay.url, data=event_list(batch)) as response:
                    answered.append(response.status)
                    if response.status == 200:
                        acknowledged.update(event["auditID"] for event in batch)
            except aiohttp.ClientError:
                return  # the relay has closed its socket: that request was never acknowledged

    senders = [asyncio.create_task(sender(index)) for index in range(4)]
    await wait_until(lambda: len(acknowledged) >= 2000, timeout=60, what="load to build up")
    relay.process.signal(signal.SIGTERM)
    assert await asyncio.to_thread(relay.process.wait, 30) == 0
    await asyncio.wait_for(asyncio.gather(*senders), 30)
    assert "draining" in relay.process.stderr()

    records = await read_topic(relay.bootstrap, relay.topic, len(acknowledged), timeout=60)
    delivered = {orjson.loads(record.value)["auditID"] for record in records}
    assert acknowledged <= delivered, f"lost {len(acknowledged - delivered)} acknowledged events"
    assert set(answered) <= {200, 503}


async def test_two_workers_serve_and_shut_down_cleanly(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay("--workers", "2")
    events = audit_events()
    for round_ in range(20):
        async with http.post(relay.url, data=event_list(stamped(events, f"w{round_}"))) as response:
            assert response.status == 200
    assert await topic_size(relay.bootstrap, relay.topic) == 20 * len(events)
    async with http.get(relay.base + "/metrics") as response:
        text = await response.text()
    assert f"relay_events_accepted_total {20.0 * len(events)}" in text  # summed over both workers
    relay.process.signal(signal.SIGTERM)
    assert await asyncio.to_thread(relay.process.wait, 30) == 0
    assert relay.process.stderr().count("relay.edge.server: stopped") == 2
