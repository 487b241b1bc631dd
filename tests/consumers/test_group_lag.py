"""The lag of every consumer group, read from Kafka by any consumer: a dead group's included."""

from __future__ import annotations

import logging
import signal
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from audit_common.kafka_connection import KafkaConnection
from consumers.group_lag import GroupLagExporter
from consumers.health import Health
from consumers.metrics import ConsumerMetrics
from tests.consumers.conftest import StartConsumer
from tests.consumers.messages import produce_events, with_fresh_ids
from tests.consumers.probes import scrape, value
from tests.support.kafka import committed_and_end, unique_topic
from tests.support.net import unused_port, wait_until
from tests.support.processes import wait_for_exit_or_fail

PARTITIONS = 2
UPDATED = "audit_consumer_group_lag_updated_timestamp_seconds"


async def test_a_group_whose_only_consumer_was_killed_shows_its_lag_growing_through_another(
    kafka_bootstrap: str,
    new_topic: Any,
    start_consumer: StartConsumer,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    topic = await new_topic(PARTITIONS)
    await produce_events(kafka_bootstrap, topic, with_fresh_ids(10))
    dead_group = f"dead-{uuid.uuid4().hex[:8]}"
    doomed = start_consumer(
        "--sink", "jsonl", "--topic", topic, "--output", str(tmp_path / "dead.jsonl"),
        group=dead_group,
    )  # fmt: skip

    async def all_committed() -> bool:
        committed, end = await committed_and_end(kafka_bootstrap, dead_group, topic, PARTITIONS)
        return committed == end == 10

    await wait_until(all_committed, timeout=30, what="the doomed group's offsets committed")
    doomed.signal(signal.SIGKILL)
    doomed.wait(10)
    await produce_events(kafka_bootstrap, topic, with_fresh_ids(7))

    port = unused_port()
    watcher_group = f"watcher-{uuid.uuid4().hex[:8]}"
    watcher = start_consumer(
        "--sink", "jsonl", "--topic", topic, "--output", str(tmp_path / "watcher.jsonl"),
        "--metrics-listen", f"127.0.0.1:{port}", "--group-lag-interval", "0.2",
        group=watcher_group,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    async def lag_is(group: str, expected: float) -> bool:
        samples = await scrape(http, base)
        lags = [
            value(samples, "audit_consumer_group_lag", group=group, topic=topic, partition=str(p))
            for p in range(PARTITIONS)
        ]
        if any(lag is None for lag in lags):
            return False
        return sum(lag for lag in lags if lag is not None) == expected

    await wait_until(lambda: lag_is(dead_group, 7), timeout=30, what="the dead group's lag, 7")
    await wait_until(lambda: lag_is(watcher_group, 0), timeout=30, what="the watcher's lag, 0")
    await produce_events(kafka_bootstrap, topic, with_fresh_ids(5))
    await wait_until(lambda: lag_is(dead_group, 12), timeout=30, what="the dead group's lag, 12")

    samples = await scrape(http, base)
    committed = [
        value(
            samples,
            "audit_consumer_group_committed_offset",
            group=dead_group,
            topic=topic,
            partition=str(p),
        )
        for p in range(PARTITIONS)
    ]
    assert sum(c for c in committed if c is not None) == 10
    updated = value(samples, "audit_consumer_group_lag_updated_timestamp_seconds")
    assert updated is not None and updated > 0
    assert wait_for_exit_or_fail(watcher, signal.SIGTERM, 20) == 0


async def test_kafka_out_of_reach_is_logged_once_a_minute_and_makes_the_consumer_unready(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = Health(stall_timeout=300)
    health.joined()
    nowhere = KafkaConnection(bootstrap=f"127.0.0.1:{unused_port()}")
    exporter = GroupLagExporter(nowhere, "k8s-audit", 0.05, ConsumerMetrics(), health)
    with caplog.at_level(logging.WARNING, logger="consumers.group_lag"):
        async with exporter:
            await wait_until(lambda: exporter.failures >= 3, timeout=30, what="3 failures")
    ready, answer = health.readiness()
    assert not ready
    assert answer["reason"].startswith("Kafka cannot be reached"), answer
    warnings = [r for r in caplog.records if r.name == "consumers.group_lag"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


async def test_reading_the_lag_of_a_topic_not_created_yet_does_not_create_it(
    kafka_bootstrap: str,
) -> None:
    topic = unique_topic()
    metrics = ConsumerMetrics()
    health = Health(stall_timeout=300)
    exporter = GroupLagExporter(KafkaConnection(kafka_bootstrap), topic, 0.05, metrics, health)
    async with exporter:
        await wait_until(
            lambda: bool(metrics.registry.get_sample_value(UPDATED)), timeout=30, what="a read"
        )
    assert exporter.failures == 0
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert topic not in await admin.list_topics(), "the broker created the topic"
    finally:
        await admin.close()
