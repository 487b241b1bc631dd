"""The consume loop: Kafka -> decode -> filter -> dedupe -> sink (write, flush) -> commit.

Delivery is at least once: a batch's offsets are committed only after the sink's ``flush``
returned, a failing sink is retried with backoff and never skipped, and a rebalance waits for
the batch in hand to be written and committed before the partitions go to another replica
(``consumers.offsets`` keeps the offsets and commits them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
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
from consumers.dead_letters import SEND_TIMEOUT_S, letter_of_record
from consumers.dedupe import Deduplicator
from consumers.events import ConsumedEvent, decode
from consumers.health import Health
from consumers.metrics import ConsumerMetrics
from consumers.offsets import Offsets
from consumers.producers import producer_for, topic_limit
from consumers.settings import ConsumerSettings
from consumers.sinks import Sink
from consumers.sinks.base import REPEATING, BatchRefused, failure_text
from consumers.writing import SinkWriter

log = logging.getLogger(__name__)

# How long one poll waits for records; bounds how late a stop request is noticed.
POLL_TIMEOUT_MS = 500
TOPIC_POLL_SECONDS = 1.0

Batches = dict[TopicPartition, list[ConsumerRecord]]


class Runner:
    """One member of the consumer group, writing to one sink until ``stop()``.

    Created by ``consumers.__main__`` (or a test), which awaits ``run()`` and calls ``stop()``
    on SIGTERM. ``run()`` returns True after a clean drain (the batch in hand written, flushed
    and committed), False when stopped while a batch still failed (it is not committed, so it
    will be consumed again). It raises KafkaUnavailable when Kafka cannot be reached at start
    and ConfigError for unreadable TLS files; retriable errors of the sink are retried, never
    raised; an event that fails alone is dead-lettered (``_retry`` says when); ConfigError
    propagates without committing. It keeps ``health`` (served by
    ``consumers.metrics.MetricsServer``) told of its progress and of where it is.
    """

    def __init__(self, settings: ConsumerSettings, sink: Sink, metrics: ConsumerMetrics) -> None:
        self.settings = settings
        self.sink = sink
        self.metrics = metrics
        self.health = Health(settings.stall_timeout)
        self._clusters = ClusterStats(metrics)
        self._stopping = asyncio.Event()
        # Held by a batch from decode to commit, and by revocation: partitions are let go only
        # once the batch in hand is flushed and committed.
        self._lock = asyncio.Lock()
        self._dedupe = Deduplicator(settings.dedupe_window)
        self._consumer: AIOKafkaConsumer | None = None
        self._offsets: Offsets | None = None
        self._writer = SinkWriter(sink, settings.dead_letter_topic, metrics, self._clusters)

    def stop(self) -> None:
        """Ask ``run()`` to finish the batch in hand and return; safe from a signal handler."""
        self.health.stopping()
        self._stopping.set()

    async def run(self) -> bool:
        kafka = self.settings.kafka.client_kwargs()
        session_ms = int(self.settings.session_timeout * 1000)
        consumer = AIOKafkaConsumer(
            group_id=self.settings.group,
            client_id=self.settings.client_id,
            enable_auto_commit=False,
            auto_offset_reset=self.settings.start_from,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 3),
            **kafka,
        )
        producer: RecoveringProducer | None = None
        self._consumer = consumer
        self._offsets = offsets = Offsets(consumer, self.metrics, self.health)
        leave_by: float | None = None
        try:
            self.health.starting("opening the sink")
            if not await self._retry("open", "open the sink", self.sink.open):
                return False
            self.health.starting("connecting to Kafka")
            limit = await topic_limit(
                self.settings.kafka, self.settings.dead_letter_topic, self.settings.client_id
            )
            self._writer.letter_limit = limit
            producer = RecoveringProducer(
                partial(producer_for, self.settings.kafka, self.settings.client_id, limit),
                name="dead-letter producer",
                close_timeout=SEND_TIMEOUT_S,
            )
            await self._start(consumer, producer)
            self.health.starting(f"waiting for topic {self.settings.topic}")
            if not await self._wait_for_topic(consumer):
                return True  # stopped before there was anything to consume
            self.health.starting(f"joining group {self.settings.group}")
            consumer.subscribe([self.settings.topic], listener=_RebalanceListener(self))
            log.info(
                "consuming %s in group %s into the %s sink",
                self.settings.topic,
                self.settings.group,
                self.settings.sink,
            )
            clean = await self._consume(consumer, producer)
            leave_by = asyncio.get_running_loop().time() + self.settings.shutdown_grace
            if clean and self.sink.held():
                drained = self._drain_locked()
                clean = await self._before(leave_by, drained, "write out what the sink holds")
                clean = clean and not self.sink.held()
            committed = await self._before(leave_by, self._commit_last(), "commit offsets")
            return clean and committed and offsets.all_committed
        finally:
            if leave_by is None:
                leave_by = asyncio.get_running_loop().time() + self.settings.shutdown_grace
            await asyncio.gather(
                self._before(leave_by, self._leave_group(consumer, offsets), "leave the group"),
                # Nothing is left to send: it returns at once, Kafka up or not.
                *([producer.stop()] if producer is not None else []),
            )
            await self.sink.close()
            log.info("stopped")

    async def _before(self, deadline: float, step: Awaitable[None], what: str) -> bool:
        """Run one shutdown step until ``deadline``; False (and logged) when it was cut short.

        aiokafka waits for an unreachable coordinator without end, at stop as at commit: the
        grace keeps a stopped consumer from hanging until the orchestrator's SIGKILL.
        """
        try:
            async with asyncio.timeout_at(deadline):
                await step
        except TimeoutError:
            log.error(
                "could not %s within --shutdown-grace %g s: Kafka did not answer",
                what,
                self.settings.shutdown_grace,
            )
            return False
        return True

    async def _commit_last(self) -> None:
        assert self._offsets is not None
        async with self._lock:
            await self._offsets.commit_flushed()

    async def _leave_group(self, consumer: AIOKafkaConsumer, offsets: Offsets) -> None:
        await offsets.settle()
        try:
            await consumer.stop()
        except asyncio.CancelledError:
            # With Kafka down, aiokafka's fetcher re-raises the cancellation of its own pending
            # fetches (aio-libs/aiokafka#647); only a cancellation of this task goes on up.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.warning("the Kafka consumer closed with fetches still pending")

    async def _start(self, consumer: AIOKafkaConsumer, producer: RecoveringProducer) -> None:
        try:
            await consumer.start()
        except KafkaError as exc:
            bootstrap = self.settings.kafka.bootstrap
            raise KafkaUnavailable(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
        await producer.start()  # connects in the background

    async def _wait_for_topic(self, consumer: AIOKafkaConsumer) -> bool:
        """Wait until the topic exists; False when stopped first.

        Subscribing to a missing topic would have the broker auto-create it with its default
        partition count, before the relay creates it with the partitions meant for it, and the
        group would not notice the topic for minutes. Listing topics creates nothing.
        """
        topic = self.settings.topic
        waiting_logged = False
        while True:
            try:
                if topic in await consumer.topics():
                    return True
            except KafkaError as exc:
                log.warning("cannot list Kafka topics: %s", exc)
            if not waiting_logged:
                log.info("waiting for topic %s to exist (the relay creates it at start)", topic)
                waiting_logged = True
            if await self._stop_requested_within(TOPIC_POLL_SECONDS):
                return False

    async def _consume(self, consumer: AIOKafkaConsumer, producer: RecoveringProducer) -> bool:
        while not self._stopping.is_set():
            try:
                batches: Batches = await consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=self.settings.max_batch
                )
            except InvalidSessionTimeoutError as exc:
                raise ConfigError(
                    f"--session-timeout {self.settings.session_timeout}: the broker refuses it "
                    "(outside its group.min/max.session.timeout.ms, 6 s to 30 min by default)"
                ) from exc
            except KafkaError as exc:  # what aiokafka does not retry itself: authorization...
                raise KafkaUnavailable(f"cannot consume {self.settings.topic}: {exc}") from exc
            if batches and not await self._process(producer, batches):
                return False
            if not batches and self.sink.held() and not await self._flush_held():
                return False
            assert self._offsets is not None
            self._offsets.commit_in_background()
            lag = self._offsets.update_lag()
            if lag or self._offsets.uncommitted:
                self.health.waiting(f"{lag} messages of lag wait to be consumed and committed")
            else:
                self.health.idle()
        return True

    async def _process(self, producer: RecoveringProducer, batches: Batches) -> bool:
        """Write one fetched batch and mark its offsets; False when stopped while it failed."""
        assert self._consumer is not None and self._offsets is not None
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
            if undecodable:
                letters = [letter_of_record(record, reason) for record, reason in undecodable]
                send = partial(self._writer.dead_letter, producer, letters)
                if not await self._retry("dead-letter", "send to the dead-letter topic", send):
                    return False
            if fresh:
                write = partial(self._writer.write, producer, fresh)
                one_by_one = partial(self._writer.write_one_by_one, producer, fresh)
                if not await self._retry("sink", "write to the sink", write, one_by_one):
                    return False
            for tp, tp_records in batches.items():
                self._offsets.mark_written(tp, tp_records[-1].offset + 1)
            self._offsets.release(self.sink.held())
            return True

    async def _flush_held(self) -> bool:
        """After an idle poll: let a sink that holds events write what is due by age."""
        async with self._lock:
            if not await self._retry("sink", "write to the sink", self.sink.flush):
                return False
            assert self._offsets is not None
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
        assert self._offsets is not None
        self._offsets.release(self.sink.held())

    async def _drain_locked(self) -> None:
        async with self._lock:
            await self._drain()

    async def _retry(
        self,
        operation: str,
        what: str,
        action: Callable[[], Awaitable[None]],
        one_by_one: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """Run ``action`` until it succeeds (True) or a stop request comes while it fails (False).

        Retriable project errors are retried with exponential backoff. With ``one_by_one`` (the
        batch's events written one at a time), a batch the sink refuses for good
        (``BatchRefused``), an exception that repeats for an event (``REPEATING``) and, after
        ``--max-attempts`` tries, any other exception the sink did not expect switch to it, so
        that no event can stop the group. Other errors (ConfigError) propagate, and the process
        exits without committing what failed.
        """
        delay = self.settings.retry_backoff
        failures = unexpected = 0
        while True:
            try:
                await action()
            except AuditRelayError as exc:
                if isinstance(exc, BatchRefused) and one_by_one is not None:
                    log.warning("%s; writing the batch's events one by one", exc)
                    action, one_by_one = one_by_one, None
                    continue
                if not exc.retriable:
                    raise
                failures += 1
                self.metrics.failures.labels(operation).inc()
                if operation == "open":
                    self.health.starting(f"cannot open the sink: {exc}")
                else:
                    self.health.waiting(f"unable to {what} ({failures} failures): {exc}")
                log.warning(
                    "cannot %s (failure %d, next try in %.1fs): %s", what, failures, delay, exc
                )
            except Exception as exc:
                if one_by_one is None:
                    raise
                unexpected += 1
                self.metrics.unexpected.inc()
                attempts = self.settings.max_attempts
                if isinstance(exc, REPEATING) or unexpected >= attempts:
                    log.error(
                        "the %s sink failed %d time(s) on a batch with %s; writing its events "
                        "one by one to dead-letter those that fail alone",
                        self.sink.name,
                        unexpected,
                        failure_text(exc),
                        exc_info=exc,
                    )
                    action, one_by_one = one_by_one, None
                    continue
                self.health.waiting(f"unable to {what} ({unexpected} unexpected errors): {exc}")
                log.warning(
                    "cannot %s (unexpected error %d of %d, next try in %.1fs): %s",
                    what,
                    unexpected,
                    attempts,
                    delay,
                    failure_text(exc),
                )
            else:
                if failures or unexpected:
                    log.info("could %s after %d failures", what, failures + unexpected)
                return True
            if self._offsets is not None:
                self._offsets.update_lag()
            if await self._stop_requested_within(delay):
                log.error(
                    "stopping while unable to %s; the batch is not committed, it comes again",
                    what,
                )
                return False
            delay = min(delay * 2, self.settings.retry_backoff_max)

    async def _stop_requested_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Called by aiokafka before a rebalance: wait for the batch in hand, then commit."""
        assert self._offsets is not None
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


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.runner.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.runner.on_assigned(assigned)


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
