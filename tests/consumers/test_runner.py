"""The consume loop in-process against the real broker, with sinks defined here."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Self

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from audit_common.errors import SinkError
from consumers.events import ConsumedEvent
from consumers.metrics import ConsumerMetrics
from consumers.runner import Runner
from consumers.settings import build_settings
from consumers.sinks import SINKS, Sink
from tests.consumers.messages import produce_events, produce_raw, with_fresh_ids
from tests.consumers.test_filters import CHANGES, NOISE
from tests.support.events import audit_events
from tests.support.kafka import read_topic
from tests.support.net import wait_until


class RecordingSink(Sink):
    """Keeps what it is given; ``failures`` first write attempts fail, and the one after waits
    for ``gate`` so that a test can look at the committed offsets while the sink is failing."""

    name = "recording"
    failures = 0

    def __init__(self) -> None:
        self.events: list[ConsumedEvent] = []
        self.attempts = 0
        self.flushes = 0
        self.gate = asyncio.Event()
        if not self.failures:
            self.gate.set()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        return cls()

    async def open(self) -> None:
        pass

    async def write(self, events: Sequence[ConsumedEvent]) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise SinkError(f"induced failure {self.attempts}")
        await self.gate.wait()
        self.events.extend(events)

    async def flush(self) -> None:
        self.flushes += 1

    async def close(self) -> None:
        pass

    def audit_ids(self) -> Counter[str]:
        return Counter(event.audit_id for event in self.events)


class FailingThriceSink(RecordingSink):
    name = "failing-thrice"
    failures = 3


@pytest.fixture(autouse=True)
def register_test_sinks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SINKS, RecordingSink.name, RecordingSink)
    monkeypatch.setitem(SINKS, FailingThriceSink.name, FailingThriceSink)


@asynccontextmanager
async def running(
    bootstrap: str, topic: str, sink: str, *flags: str, dead_letter: str = "unused-dead-letter"
) -> AsyncIterator[tuple[Runner, RecordingSink]]:
    """A runner built from flags, as the program builds it; on exit, stopped and drained."""
    argv = [
        *("--sink", sink, "--kafka-bootstrap", bootstrap, "--topic", topic),
        *("--dead-letter-topic", dead_letter, "--group", f"group-{uuid.uuid4().hex[:8]}"),
        *("--retry-backoff", "0.02", "--retry-backoff-max", "0.2"),
        *flags,
    ]
    settings, recording, _ = build_settings(argv, {})
    assert isinstance(recording, RecordingSink)
    runner = Runner(settings, recording, ConsumerMetrics())
    task = asyncio.create_task(runner.run())
    try:
        yield runner, recording
    finally:
        runner.stop()
        clean = await asyncio.wait_for(task, 30)
    assert clean, "the runner did not drain cleanly"


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return [await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
    finally:
        await consumer.stop()


def sample(metrics: ConsumerMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


async def test_a_sink_failing_three_times_then_working_loses_nothing(
    kafka_bootstrap: str, new_topic: Any
) -> None:
    topic = await new_topic(3)
    events = with_fresh_ids(300)
    await produce_events(kafka_bootstrap, topic, events)
    async with running(kafka_bootstrap, topic, "failing-thrice") as (runner, sink):
        await wait_until(lambda: sink.attempts == 4, timeout=30, what="three failed attempts")
        # Still failing (the fourth attempt waits at the gate): nothing may be committed yet.
        group = runner.settings.group
        assert await committed_offsets(kafka_bootstrap, group, topic, 3) == [None] * 3
        sink.gate.set()
        await wait_until(lambda: len(sink.events) >= len(events), timeout=30, what="all events")
    assert sink.audit_ids() == Counter(e["auditID"] for e in events)
    assert sink.flushes >= 1
    assert sample(runner.metrics, "audit_consumer_failures_total", {"operation": "sink"}) == 3
    assert sample(runner.metrics, "audit_consumer_events_written_total") == len(events)
    offsets = await committed_offsets(kafka_bootstrap, group, topic, 3)
    assert sum(offsets) == len(events)


async def test_undecodable_messages_are_dead_lettered_and_consumption_goes_on(
    kafka_bootstrap: str, new_topic: Any
) -> None:
    topic, dead_letter = await new_topic(1), await new_topic(1)
    good = with_fresh_ids(2)
    bad = [b"not json", b"[1, 2]", orjson.dumps({"auditID": 5}), b""]
    await produce_events(kafka_bootstrap, topic, good[:1])
    await produce_raw(kafka_bootstrap, topic, bad)
    await produce_events(kafka_bootstrap, topic, good[1:])
    async with running(kafka_bootstrap, topic, "recording", dead_letter=dead_letter) as (
        runner,
        sink,
    ):
        await wait_until(lambda: len(sink.events) == 2, timeout=30, what="both good events")
        records = await read_topic(kafka_bootstrap, dead_letter, len(bad))
    assert [e.audit_id for e in sink.events] == [e["auditID"] for e in good]
    assert [r.value for r in records] == bad
    reasons = [dict(r.headers)["reason"].decode() for r in records]
    assert reasons[0].startswith("value is not JSON")
    assert reasons[1] == "value is a JSON list, not an object"
    assert reasons[2] == "missing or non-string field 'auditID'"
    assert [dict(r.headers)["source-offset"] for r in records] == [b"1", b"2", b"3", b"4"]
    assert sample(runner.metrics, "audit_consumer_events_dead_lettered_total") == len(bad)


@pytest.mark.parametrize(("window", "expected_copies"), [("10000", 1), ("0", 2)])
async def test_a_resent_batch_is_written_once_within_the_dedupe_window(
    kafka_bootstrap: str, new_topic: Any, window: str, expected_copies: int
) -> None:
    topic = await new_topic(2)
    events = with_fresh_ids(40)
    await produce_events(kafka_bootstrap, topic, events)
    await produce_events(kafka_bootstrap, topic, events)  # the apiserver retried the batch
    async with running(kafka_bootstrap, topic, "recording", "--dedupe-window", window) as (
        runner,
        sink,
    ):
        await wait_until(
            lambda: sample(runner.metrics, "audit_consumer_events_consumed_total") == 80,
            timeout=30,
            what="both copies consumed",
        )
    assert sink.audit_ids() == Counter({e["auditID"]: expected_copies for e in events})
    deduplicated = sample(runner.metrics, "audit_consumer_events_deduplicated_total")
    assert deduplicated == 40 * (2 - expected_copies)


def is_noise(event: dict[str, Any]) -> bool:
    user = (event.get("user") or {}).get("username", "")
    return event.get("verb") in ("get", "list", "watch") and user.startswith("system:")


def is_change_to_rbac_or_secrets(event: dict[str, Any]) -> bool:
    resource = (event.get("objectRef") or {}).get("resource")
    verbs = ("create", "update", "patch", "delete", "deletecollection")
    resources = ("secrets", "roles", "rolebindings", "clusterroles", "clusterrolebindings")
    return event.get("verb") in verbs and resource in resources


@pytest.mark.parametrize(
    ("flags", "keeps"),
    [
        (("--exclude", NOISE), lambda event: not is_noise(event)),
        (("--include", CHANGES), is_change_to_rbac_or_secrets),
    ],
)
async def test_filters_apply_before_the_sink(
    kafka_bootstrap: str, new_topic: Any, flags: tuple[str, str], keeps: Any
) -> None:
    topic = await new_topic(1)
    events = audit_events()
    await produce_events(kafka_bootstrap, topic, events)
    # The events hold two pairs that share a key; the window is off to see the filter alone.
    no_dedupe = ("--dedupe-window", "0")
    async with running(kafka_bootstrap, topic, "recording", *flags, *no_dedupe) as (runner, sink):
        await wait_until(
            lambda: sample(runner.metrics, "audit_consumer_events_consumed_total") == len(events),
            timeout=30,
            what="the events consumed",
        )
    kept = [event.audit_id for event in sink.events]
    assert kept == [event["auditID"] for event in events if keeps(event)]
    assert 0 < len(kept) < len(events)
    assert sample(runner.metrics, "audit_consumer_events_filtered_total") == len(events) - len(kept)


class AlwaysFailingSink(RecordingSink):
    name = "always-failing"
    failures = 10**9


async def test_stop_while_the_sink_fails_returns_false_and_commits_nothing(
    kafka_bootstrap: str, new_topic: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(SINKS, AlwaysFailingSink.name, AlwaysFailingSink)
    topic = await new_topic(1)
    await produce_events(kafka_bootstrap, topic, with_fresh_ids(10))
    argv = ["--sink", "always-failing", "--kafka-bootstrap", kafka_bootstrap, "--topic", topic]
    settings, sink, _ = build_settings([*argv, "--group", "failing", "--retry-backoff", "0.02"], {})
    assert isinstance(sink, AlwaysFailingSink)
    runner = Runner(settings, sink, ConsumerMetrics())
    task = asyncio.create_task(runner.run())
    await wait_until(lambda: sink.attempts >= 3, timeout=30, what="failed attempts")
    runner.stop()
    assert await asyncio.wait_for(task, 10) is False
    assert sink.events == []
    assert await committed_offsets(kafka_bootstrap, "failing", topic, 1) == [None]
