"""A consumer's start and stop: open the sink, connect to Kafka, wait for the topic, join the
group, run the consume loop, then write out, commit and leave the group within the grace.

Delivery is at least once: ``consumers.consume_loop`` writes each batch and marks its offsets
flushed only after the sink's ``flush`` returned, ``consumers.offsets`` commits them,
``consumers.retrying`` retries a failing sink with backoff and never skips it; at stop, the
batch in hand is written and committed before the member leaves its group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from functools import partial

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from audit_common.errors import KafkaUnavailable
from audit_common.kafka_producer import RecoveringProducer
from consumers.consume_loop import ConsumeLoop, RebalanceListener
from consumers.dead_letters import SEND_TIMEOUT_S
from consumers.health import Health
from consumers.metrics import ConsumerMetrics
from consumers.offsets import Offsets
from consumers.producers import producer_for, topic_limit
from consumers.retrying import Retrier, stop_requested_within
from consumers.settings import ConsumerSettings
from consumers.sinks import Sink

log = logging.getLogger(__name__)

TOPIC_POLL_SECONDS = 1.0


class Runner:
    """One member of the consumer group, writing to one sink until ``stop()``.

    Created by ``consumers.__main__`` (or a test), which awaits ``run()`` and calls ``stop()``
    on SIGTERM. ``run()`` returns True after a clean drain (the batch in hand written, flushed
    and committed), False when stopped while a batch still failed (it is not committed, so it
    will be consumed again). It raises KafkaUnavailable when Kafka cannot be reached at start
    and ConfigError for unreadable TLS files; retriable errors of the sink are retried, never
    raised; an event that fails alone is dead-lettered (``Retrier.retry`` says when);
    ConfigError propagates without committing. It keeps ``health`` (served by
    ``consumers.metrics.MetricsServer``) told of its progress and of where it is.
    """

    def __init__(self, settings: ConsumerSettings, sink: Sink, metrics: ConsumerMetrics) -> None:
        self.settings = settings
        self.sink = sink
        self.metrics = metrics
        self.health = Health(settings.stall_timeout)
        self._stopping = asyncio.Event()

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
        offsets = Offsets(consumer, self.metrics, self.health)
        retrier = Retrier(
            self.settings, self.metrics, self.health, offsets, self.sink.name, self._stopping
        )
        leave_by: float | None = None
        try:
            self.health.starting("opening the sink")
            if not await retrier.retry("open", "open the sink", self.sink.open):
                return False
            self.health.starting("connecting to Kafka")
            limit = await topic_limit(
                self.settings.kafka, self.settings.dead_letter_topic, self.settings.client_id
            )
            producer = RecoveringProducer(
                partial(producer_for, self.settings.kafka, self.settings.client_id, limit),
                name="dead-letter producer",
                close_timeout=SEND_TIMEOUT_S,
            )
            loop = ConsumeLoop(
                self.settings,
                self.sink,
                self.metrics,
                self.health,
                consumer=consumer,
                offsets=offsets,
                producer=producer,
                retrier=retrier,
                stopping=self._stopping,
                letter_limit=limit,
            )
            await self._start(consumer, producer)
            self.health.starting(f"waiting for topic {self.settings.topic}")
            if not await self._wait_for_topic(consumer):
                return True  # stopped before there was anything to consume
            self.health.starting(f"joining group {self.settings.group}")
            consumer.subscribe([self.settings.topic], listener=RebalanceListener(loop))
            log.info(
                "consuming %s in group %s into the %s sink",
                self.settings.topic,
                self.settings.group,
                self.settings.sink,
            )
            clean = await loop.run()
            leave_by = asyncio.get_running_loop().time() + self.settings.shutdown_grace
            if clean and self.sink.held():
                drained = loop.drain_held()
                clean = await self._before(leave_by, drained, "write out what the sink holds")
                clean = clean and not self.sink.held()
            committed = await self._before(leave_by, loop.commit_flushed(), "commit offsets")
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
            if await stop_requested_within(self._stopping, TOPIC_POLL_SECONDS):
                return False
