"""Delivery: Kafka first, the spool when Kafka fails, replay when it is back (real spool on disk).

Kafka is stood in for by a callable that fails while told to: this is the pure decision logic;
tests/faults/ runs the same paths against a real broker that is killed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from audit_common.errors import KafkaUnavailable, Overloaded
from relay.events.records import EVENTS, OutboundRecord
from relay.metrics import RelayMetrics
from relay.spool.delivery import Delivery, DeliverySettings
from tests.support.net import wait_until


def batch(start: int, count: int) -> list[OutboundRecord]:
    return [
        OutboundRecord(EVENTS, b"x" * 100, str(i).encode()) for i in range(start, start + count)
    ]


class Kafka:
    def __init__(self) -> None:
        self.up = True
        self.received: list[OutboundRecord] = []
        self.calls = 0

    async def publish(self, records: Sequence[OutboundRecord]) -> None:
        self.calls += 1
        if not self.up:
            raise KafkaUnavailable("broker down")
        self.received.extend(records)


def gauge(metrics: RelayMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_without_a_spool_kafka_errors_reach_the_handler() -> None:
    kafka = Kafka()
    kafka.up = False
    async with Delivery(DeliverySettings(), kafka.publish, RelayMetrics()) as delivery:
        with pytest.raises(KafkaUnavailable):
            await delivery.deliver(batch(0, 1))


async def test_spools_while_kafka_is_down_and_replays_in_order_when_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.spool.delivery")
    kafka = Kafka()
    metrics = RelayMetrics()
    settings = DeliverySettings(spool_dir=str(tmp_path))
    async with Delivery(settings, kafka.publish, metrics) as delivery:
        await delivery.deliver(batch(0, 5))
        kafka.up = False
        await delivery.deliver(batch(5, 5))  # fails over to the spool
        calls = kafka.calls
        await delivery.deliver(batch(10, 5))  # straight to the spool: it is not empty
        assert kafka.calls == calls
        assert gauge(metrics, "relay_kafka_up") == 0
        assert gauge(metrics, "relay_spool_events") == 10
        assert gauge(metrics, "relay_events_spooled_total") == 10
        assert "Kafka unavailable" in caplog.text

        kafka.up = True
        await wait_until(lambda: len(kafka.received) == 15, timeout=15, what="replay")
        assert [int(r.key or b"") for r in kafka.received] == list(range(15))
        await wait_until(lambda: gauge(metrics, "relay_kafka_up") == 1, timeout=5, what="up")
        assert gauge(metrics, "relay_spool_events") == 0
        assert gauge(metrics, "relay_spool_replayed_events_total") == 10
        assert "Kafka is back" in caplog.text
        await delivery.deliver(batch(15, 1))
        assert len(kafka.received) == 16


async def test_full_spool_refuses_and_stores_nothing(tmp_path: Path) -> None:
    kafka = Kafka()
    kafka.up = False
    settings = DeliverySettings(spool_dir=str(tmp_path), spool_max_bytes=2000)
    async with Delivery(settings, kafka.publish, RelayMetrics()) as delivery:
        await delivery.deliver(batch(0, 5))
        with pytest.raises(Overloaded):
            await delivery.deliver(batch(5, 50))
        assert delivery.spool is not None and delivery.spool.stats().events == 5


async def test_restart_replays_what_the_last_run_spooled(tmp_path: Path) -> None:
    kafka = Kafka()
    kafka.up = False
    settings = DeliverySettings(spool_dir=str(tmp_path))
    async with Delivery(settings, kafka.publish, RelayMetrics()) as delivery:
        await delivery.deliver(batch(0, 3))
    kafka.up = True
    async with Delivery(settings, kafka.publish, RelayMetrics()):
        await wait_until(lambda: len(kafka.received) == 3, timeout=10, what="replay")
