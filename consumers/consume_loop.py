"""The consume loop of one group member: poll -> decode -> filter -> dedupe -> sink -> offsets.

Built by ``consumers.runner.Runner`` once Kafka and the dead-letter producer are started; the
runner awaits ``run()`` until a stop request, subscribes with a ``RebalanceListener`` around
it, and calls ``drain_held()`` and ``commit_flushed()`` when it stops. A batch's offsets are
marked flushed (``consumers.offsets``) only after the sink's ``flush`` returned; a failing sink
is retried (``consumers.retrying``) and never skipped; a rebalance waits for the batch in hand
to be written and committed before the partitions go to another replica.

``run()`` raises ConfigError when the broker refuses ``--session-timeout``, KafkaUnavailable
for a poll error aiokafka does not retry itself (authorization...), and what the retries let
through (ConfigError from the sink); an event that cannot be decoded is dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from functools import partial

from aiokafka import (
    AIOKafkaConsumer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import InvalidSessionTimeoutError, KafkaError

from audit_common.errors import AuditRelayError, ConfigError, InvalidEvent, KafkaUnavailable
from audit_common.kafka_producer import RecoveringProducer
from consumers.cluster_stats import ClusterStats
from consumers.dead_letters import letter_of_record
from consumers.dedupe import Deduplicator
from consumers.events import ConsumedEvent, decode
from consumers.health import Health
from consumers.metrics import ConsumerMetrics
from consumers.offsets import Offsets
from consumers.retrying import Retrier
from consumers.settings import ConsumerSettings
from consumers.sinks import Sink
from consumers.writing import SinkWriter

log = logging.getLogger(__name__)

# How long one poll waits for records; bounds how late a stop request is noticed.
POLL_TIMEOUT_MS = 500

Batches = dict[TopicPartition, list[ConsumerRecord]]


class ConsumeLoop:
    """Fetches batches from ``consumer`` and writes them to ``sink`` until ``stopping`` is set.

    ``producer`` sends the dead letters (to a topic taking records up to ``letter_limit``
    bytes); ``offsets`` is told what is written and flushed, and commits it; ``health`` is told
    what waits. Its own lock is held by a batch from decode to commit, and by a revocation:
    partitions are let go only once the batch in hand is flushed and committed.
    """

    def __init__(
        self,
        settings: ConsumerSettings,
        sink: Sink,
        metrics: ConsumerMetrics,
        health: Health,
        *,
        consumer: AIOKafkaConsumer,
        offsets: Offsets,
        producer: RecoveringProducer,
        retrier: Retrier,
        stopping: asyncio.Event,
        letter_limit: int,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.metrics = metrics
        self.health = health
        self._consumer = consumer
        self._offsets = offsets
        self._producer = producer
        self._retrier = retrier
        self._stopping = stopping
        self._lock = asyncio.Lock()
        self._clusters = ClusterStats(metrics)
        self._dedupe = Deduplicator(settings.dedupe_window)
        self._writer = SinkWriter(sink, settings.dead_letter_topic, metrics, self._clusters)
        self._writer.letter_limit = letter_limit

    async def run(self) -> bool:
        """Consume until ``stopping`` is set: True then, False when stopped while a batch still
        failed (it is not committed, so it will be consumed again)."""
        while not self._stopping.is_set():
            try:
                batches: Batches = await self._consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=self.settings.max_batch
                )
            except InvalidSessionTimeoutError as exc:
                raise ConfigError(
                    f"--session-timeout {self.settings.session_timeout}: the broker refuses it "
                    "(outside its group.min/max.session.timeout.ms, 6 s to 30 min by default)"
                ) from exc
            except KafkaError as exc:  # what aiokafka does not retry itself: authorization...
                raise KafkaUnavailable(f"cannot consume {self.settings.topic}: {exc}") from exc
            if batches and not await self._process(batches):
                return False
            if not batches and self.sink.held() and not await self._flush_held():
                return False
            self._offsets.commit_in_background()
            lag = self._offsets.update_lag()
            if lag or self._offsets.uncommitted:
                self.health.waiting(f"{lag} messages of lag wait to be consumed and committed")
            else:
                self.health.idle()
        return True

    async def drain_held(self) -> None:
        """At stop, after ``run()``: have the sink write out all it holds (``_drain``)."""
        async with self._lock:
            await self._drain()

    async def commit_flushed(self) -> None:
        """At stop, last: commit every offset flushed, once no batch is in hand."""
        async with self._lock:
            await self._offsets.commit_flushed()

    async def on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Called by aiokafka before a rebalance: wait for the batch in hand, then commit."""
        async with self._lock:
            if self.sink.held():
                await self._drain()
            await self._offsets.commit_flushed()
            self._offsets.forget(revoked)
        if revoked:
            log.info("partitions revoked: %s", _describe(revoked))

    def on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.health.joined()
        log.info("partitions assigned: %s", _describe(assigned))

    async def _process(self, batches: Batches) -> bool:
        """Write one fetched batch and mark its offsets; False when stopped while it failed."""
        async with self._lock:
            # A rebalance between the fetch and the lock gave these partitions to another
            # replica, which consumes them from the committed offsets.
            assigned = self._consumer.assignment()
            batches = {tp: records for tp, records in batches.items() if tp in assigned}
            for tp, records in batches.items():
                self._offsets.resumed_at(tp, records[0].offset)
            records = [record for tp_records in batches.values() for record in tp_records]
            self.health.waiting(f"{len(records)} records fetched wait to be written")
            self.metrics.consumed.inc(len(records))
            events, undecodable = _decode(records)
            self._clusters.consumed(events)
            passed = [event for event in events if self.settings.event_filter.accepts(event)]
            self.metrics.filtered.inc(len(events) - len(passed))
            # Once per batch, not per attempt: a retried batch must not look like a repeat.
            fresh = [event for event in passed if not self._dedupe.is_repeat(event)]
            self.metrics.deduplicated.inc(len(passed) - len(fresh))
            retry = self._retrier.retry
            if undecodable:
                letters = [letter_of_record(record, reason) for record, reason in undecodable]
                send = partial(self._writer.dead_letter, self._producer, letters)
                if not await retry("dead-letter", "send to the dead-letter topic", send):
                    return False
            if fresh:
                write = partial(self._writer.write, self._producer, fresh)
                one_by_one = partial(self._writer.write_one_by_one, self._producer, fresh)
                if not await retry("sink", "write to the sink", write, one_by_one):
                    return False
            for tp, tp_records in batches.items():
                self._offsets.mark_written(tp, tp_records[-1].offset + 1)
            self._offsets.release(self.sink.held())
            return True

    async def _flush_held(self) -> bool:
        """After an idle poll: let a sink that holds events write what is due by age."""
        async with self._lock:
            if not await self._retrier.retry("sink", "write to the sink", self.sink.flush):
                return False
            self._offsets.release(self.sink.held())
            return True

    async def _drain(self) -> None:
        """Have the sink write out all it holds and mark it flushed. A failure is logged: what
        the sink holds stays uncommitted, and is consumed again. The caller holds the lock."""
        try:
            await self.sink.drain()
        except AuditRelayError as exc:
            log.error("could not write out what the sink holds, it comes again: %s", exc)
            return
        self._offsets.release(self.sink.held())


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Given to ``AIOKafkaConsumer.subscribe`` by the runner; aiokafka calls it at rebalances."""

    def __init__(self, loop: ConsumeLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.loop.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.loop.on_assigned(assigned)


def _describe(partitions: Iterable[TopicPartition]) -> str:
    """``topic[0,3,5]``, or ``none``: one short log line however many partitions there are."""
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    described = [f"{topic}[{','.join(map(str, sorted(ps)))}]" for topic, ps in by_topic.items()]
    return " ".join(sorted(described)) or "none"


def _decode(
    records: Iterable[ConsumerRecord],
) -> tuple[list[ConsumedEvent], list[tuple[ConsumerRecord, str]]]:
    events: list[ConsumedEvent] = []
    undecodable: list[tuple[ConsumerRecord, str]] = []
    for record in records:
        try:
            event = decode(
                record.value,
                record.headers,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
        except InvalidEvent as exc:
            undecodable.append((record, str(exc)))
        else:
            events.append(event)
    return events, undecodable
