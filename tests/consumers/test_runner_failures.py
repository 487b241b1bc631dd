"""How the runner sorts a sink's failures, in-process against the real broker with sinks defined
here: an exception the sink did not expect is tried ``--max-attempts`` times and then event by
event; one that repeats for an event at once; a batch refused for good event by event; the
event that fails alone is dead-lettered with the exception's text, the rest written."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from audit_common.errors import ConfigError
from audit_common.samples import sample_events
from consumers.events import ConsumedEvent
from consumers.metrics import ConsumerMetrics
from consumers.runner import Runner
from consumers.settings import build_settings
from consumers.sinks import SINKS
from consumers.sinks.base import BatchRefused
from tests.consumers.messages import produce_events
from tests.consumers.test_runner import RecordingSink, running, sample
from tests.support.kafka import read_topic
from tests.support.net import wait_until

POISON = "poison-" + uuid.uuid4().hex


def fresh(count: int) -> list[dict[str, Any]]:
    events = sample_events(count)
    for event in events:
        event["auditID"] = str(uuid.uuid4())
    return events


class PoisonedSink(RecordingSink):
    """Fails every write of a batch holding the poison with ``error()``; writes the others."""

    name = "poisoned"
    error: ClassVar[type[Exception]] = KeyError

    async def write(self, events: Sequence[ConsumedEvent]) -> None:
        self.attempts += 1
        if any(event.audit_id == POISON for event in events):
            raise self.error(f"no field for {POISON}")
        self.events.extend(events)


class RecursingSink(PoisonedSink):
    name = "recursing"
    error = RecursionError


class RefusingSink(PoisonedSink):
    name = "refusing"
    error = BatchRefused


class RefusingAllSink(RecordingSink):
    name = "refusing-all"

    async def write(self, events: Sequence[ConsumedEvent]) -> None:
        raise BatchRefused("https://siem/ answered 400: wrong format")


@pytest.fixture(autouse=True)
def register_failing_sinks(monkeypatch: pytest.MonkeyPatch) -> None:
    for sink in (PoisonedSink, RecursingSink, RefusingSink, RefusingAllSink):
        monkeypatch.setitem(SINKS, sink.name, sink)


@pytest.mark.parametrize(
    ("sink", "attempts", "reason", "counter"),
    [
        ("poisoned", 3, "KeyError: ", "audit_consumer_events_failed_total"),
        ("recursing", 1, "RecursionError: ", "audit_consumer_events_failed_total"),
        ("refusing", 1, "no field for", "audit_consumer_events_refused_total"),
    ],
)
async def test_the_event_that_fails_alone_is_dead_lettered_and_the_rest_written(
    kafka_bootstrap: str, new_topic: Any, sink: str, attempts: int, reason: str, counter: str
) -> None:
    topic, dead_letter = await new_topic(1), await new_topic(1)
    events = fresh(9)
    events[4]["auditID"] = POISON
    await produce_events(kafka_bootstrap, topic, events)
    flags = ("--max-attempts", "3")
    async with running(kafka_bootstrap, topic, sink, *flags, dead_letter=dead_letter) as (
        runner,
        recording,
    ):
        await wait_until(lambda: len(recording.events) == 8, timeout=30, what="8 events")
        [letter] = await read_topic(kafka_bootstrap, dead_letter, 1)
    headers = {name: value.decode() for name, value in letter.headers}
    assert headers["sink"] == sink and reason in headers["reason"]
    assert headers["source-offset"] == "4"
    assert [e.audit_id for e in recording.events] == [
        e["auditID"] for e in events if e != events[4]
    ]
    metrics = runner.metrics
    # Each try of the whole batch before it was written event by event.
    unexpected = sample(metrics, "audit_consumer_unexpected_errors_total")
    assert unexpected == (0 if sink == "refusing" else attempts)
    assert sample(metrics, counter) == 1
    assert sample(metrics, "audit_consumer_events_written_total") == 8


async def test_a_destination_refusing_every_event_alone_stops_the_consumer(
    kafka_bootstrap: str, new_topic: Any
) -> None:
    topic, dead_letter = await new_topic(1), await new_topic(1)
    await produce_events(kafka_bootstrap, topic, fresh(5))
    argv = [
        *("--sink", "refusing-all", "--kafka-bootstrap", kafka_bootstrap, "--topic", topic),
        *("--dead-letter-topic", dead_letter, "--group", f"group-{uuid.uuid4().hex[:8]}"),
    ]
    settings, sink, _ = build_settings(argv, {})
    runner = Runner(settings, sink, ConsumerMetrics())
    with pytest.raises(ConfigError, match="refused each of 5 events sent alone"):
        await asyncio.wait_for(runner.run(), 60)
