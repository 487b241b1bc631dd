"""The publisher across producer replacements, against a real broker: a record the broker refuses
(and the OUT_OF_ORDER_SEQUENCE_NUMBER that follows it on its partition), a broker restarted
while records are in flight, and the stall probe telling a frozen broker from a slow one."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from audit_common.errors import KafkaUnavailable
from audit_common.kafka_connection import KafkaConnection
from relay.events.records import OutboundRecord
from relay.kafka.publisher import KafkaPublisher, PublisherSettings
from relay.metrics import RelayMetrics
from tests.relay.kafka.test_publisher import record
from tests.support.kafka import LocalBroker, read_topic, unique_topic
from tests.support.net import wait_until

pytestmark = pytest.mark.integration


@asynccontextmanager
async def connected(
    bootstrap: str, metrics: RelayMetrics, **settings: float
) -> AsyncIterator[KafkaPublisher]:
    topic = unique_topic("recovery")
    publisher_settings = PublisherSettings(
        connection=KafkaConnection(bootstrap=bootstrap),
        topic=topic,
        dead_letter_topic=f"{topic}.dead-letter",
        **settings,  # type: ignore[arg-type]
    )
    async with KafkaPublisher(publisher_settings, metrics) as publisher:
        await wait_until(lambda: publisher.connected, timeout=60, what="producer connected")
        yield publisher


def restarts(metrics: RelayMetrics) -> float:
    return metrics.registry.get_sample_value("relay_kafka_producer_restarts_total") or 0


async def refusal(publisher: KafkaPublisher, records: list[OutboundRecord]) -> str | None:
    """Publish one request; its 503 reason, or None when acknowledged."""
    try:
        await publisher.publish(records)
    except KafkaUnavailable as exc:
        return str(exc)
    return None


async def test_a_refused_record_costs_the_other_requests_nothing(kafka_bootstrap: str) -> None:
    """One record over the broker's limit (alone in its batch) among 660 small requests from
    other senders, some of them on its partition, where the broker then answers
    OUT_OF_ORDER_SEQUENCE_NUMBER: it is dead-lettered at its first refusal, one producer
    replacement, and every other request is acknowledged (they wait for the new producer)."""
    metrics = RelayMetrics()
    async with connected(kafka_bootstrap, metrics, ack_timeout=10) as publisher:
        # Incompressible and twice the limit: still over it once zstd has had it.
        over = {"data": base64.b64encode(os.urandom(1_500_000)).decode()}
        large = record("large", "ResponseComplete", 0, over)
        small = [record(f"small-{i}", "ResponseComplete", i) for i in range(1, 661)]
        requests = [asyncio.create_task(refusal(publisher, [large]))]
        for wave in range(0, len(small), 30):  # senders arriving through the replacement
            requests += [asyncio.create_task(refusal(publisher, [r])) for r in small[wave:][:30]]
            await asyncio.sleep(0.05)
        answers = await asyncio.gather(*requests)
    assert answers == [None] * len(requests)
    assert restarts(metrics) == 1
    settings = publisher.settings
    delivered = await read_topic(kafka_bootstrap, settings.topic, len(small))
    assert {m.value for m in delivered} == {r.value for r in small}
    [dead] = await read_topic(kafka_bootstrap, settings.dead_letter_topic, 1)
    assert b"MessageSizeTooLarge" in dict(dead.headers)["reason"]
    assert metrics.registry.get_sample_value("relay_events_refused_by_kafka_total") == 1


async def test_a_broker_restart_while_records_are_in_flight_loses_none(
    broker_factory: Callable[[], LocalBroker],
) -> None:
    """Senders keep posting while the only broker stops (controlled shutdown) and starts again;
    a request answered 503 is sent again, as the apiserver does. Every record ends up in Kafka."""
    broker = broker_factory()
    metrics = RelayMetrics()
    sent = [record(f"restart-{i}", "ResponseComplete", i) for i in range(4000)]
    async with connected(broker.bootstrap, metrics, ack_timeout=5, partitions=3) as publisher:

        async def sender(records: list[OutboundRecord]) -> int:
            """Publish 20 records a request until each is acknowledged; the 503s it got."""
            refused = 0
            for start in range(0, len(records), 20):
                while await refusal(publisher, records[start : start + 20]) is not None:
                    refused += 1
                    await asyncio.sleep(0.2)
            return refused

        senders = [asyncio.create_task(sender(sent[i::4])) for i in range(4)]
        acks = "relay_kafka_ack_seconds_count"
        await wait_until(
            lambda: (metrics.registry.get_sample_value(acks) or 0) >= 20, timeout=30, what="acks"
        )
        await asyncio.to_thread(broker.stop)
        assert not all(task.done() for task in senders)  # gone in the middle of the load
        await asyncio.to_thread(broker.start)
        await asyncio.wait_for(asyncio.gather(*senders), timeout=180)
    assert restarts(metrics) >= 1
    delivered = await read_topic(broker.bootstrap, publisher.settings.topic, len(sent), timeout=60)
    assert {m.value for m in delivered} == {r.value for r in sent}


@pytest.mark.parametrize(
    ("thawed_after", "answer", "replacements"),
    [
        # Frozen for good: not the ack timeout's answer but the probe's, 3 misses in a row.
        (None, "Kafka unreachable: no broker answers (no broker answered 3 probes in a row", 1),
        # Frozen for 0.9 s: the acks wait, the first probe goes unanswered, the next is
        # answered; one miss is not a dead broker, so the producer stays and acknowledges.
        (0.9, None, 0),
    ],
)
async def test_the_probe_gives_up_a_frozen_broker_not_a_slow_one(
    broker_factory: Callable[[], LocalBroker],
    thawed_after: float | None,
    answer: str | None,
    replacements: int,
) -> None:
    broker = broker_factory()
    metrics = RelayMetrics()
    probe = {"stall_after": 0.2, "probe_timeout": 0.5, "probe_misses": 3}
    async with connected(broker.bootstrap, metrics, ack_timeout=30, **probe) as publisher:
        await publisher.publish([record("before", "ResponseComplete", 0)])
        broker.pause()
        if thawed_after is not None:
            asyncio.get_running_loop().call_later(thawed_after, broker.resume)
        try:
            reason = await refusal(publisher, [record("frozen", "ResponseComplete", 1)])
        finally:
            broker.resume()
    assert (reason or "").startswith(answer or "")
    assert (reason is None) == (answer is None)
    assert restarts(metrics) == replacements
