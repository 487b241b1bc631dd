"""The relay's Kafka producer: connects in the background, creates topics, publishes batches,
and replaces the producer whenever it stops delivering.

Why a failed batch means a new producer (aio-libs/aiokafka#1017): an idempotent aiokafka
producer gives a batch its sequence numbers when it drains it for sending, and never takes them
back. Once a drained batch fails, for whatever reason, the broker still waits for those numbers,
and refuses every later batch of the partition with OUT_OF_ORDER_SEQUENCE_NUMBER (45) for as long
as the producer lives. Read from aiokafka 0.14 (``producer/sender.py``,
``producer/message_accumulator.py``), an enqueued batch fails:

- on a produce response with a non-retriable error: the producer-state errors
  OUT_OF_ORDER_SEQUENCE_NUMBER (45), INVALID_PRODUCER_EPOCH (47, raised as ProducerFenced),
  INVALID_TXN_STATE (48), INVALID_PRODUCER_ID_MAPPING (49), UNKNOWN_PRODUCER_ID (59, the broker
  lost the producer's state) and PRODUCER_FENCED (90, which aiokafka knows only as UnknownError);
  and the errors of the records or of the request: CORRUPT_MESSAGE (2), MESSAGE_TOO_LARGE (10),
  RECORD_LIST_TOO_LARGE (18), TOPIC_AUTHORIZATION_FAILED (29), CLUSTER_AUTHORIZATION_FAILED (31),
  INVALID_TIMESTAMP (32), INVALID_RECORD (87), ...;
- when its partition has had no leader for longer than the request timeout: the accumulator fails
  it with NotLeaderForPartitionError or LeaderNotAvailableError after numbering it. This is what
  a controlled shutdown of the partition's only broker does, and how the relay used to get stuck;
- when the sender task dies: every batch fails with its error.

Retriable errors never fail a batch: an idempotent producer retries them without end, which is
why a producer that does not acknowledge within ``--ack-timeout`` is given up too. So the rule
is one, and lives in ``publish``: whatever fails or outlasts a batch, the producer is abandoned
(its remaining batches failed, then closed in the background), a new one (a new producer id) is
connected, and the records that were not acknowledged are sent again on it while the request's
ack timeout lasts. At least once: a record of an abandoned batch may have been written before
it failed, so ``relay_records_resent_total`` counts the possible duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import cramjam
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from audit_common.errors import KafkaUnavailable
from audit_common.kafka_connection import KafkaConnection
from audit_common.kafka_give_up import close_given_up
from audit_common.resource import AsyncResource
from relay.events.records import DEAD_LETTER, EVENTS, OutboundRecord
from relay.kafka.outage import OutageLog
from relay.kafka.partition_batches import PartitionBatches
from relay.kafka.refusals import refusal_record, refused_for_itself
from relay.kafka.topics import ensure_topics, warn_if_not_replicated
from relay.metrics import RelayMetrics

log = logging.getLogger(__name__)

_COMPRESSORS: dict[str, Callable[[bytes], object]] = {
    "lz4": cramjam.lz4.compress,
    "zstd": cramjam.zstd.compress,
    "gzip": cramjam.gzip.compress,
}
# Room for the record batch and record headers around the largest value, in bytes.
_BATCH_OVERHEAD = 4096
# Reconnect delays: doubling from the first to the longest, each cut by up to half at random so
# that the workers of many relays do not knock on a returning broker in step.
_FIRST_CONNECT_DELAY = 0.25
_MAX_CONNECT_DELAY = 5.0
# How long acks may keep a request waiting before the publisher asks whether any broker answers.
# While none does, aiokafka's sender refreshes metadata in a loop without pause (a core's worth
# of CPU); giving the producer up stops that, and the reconnects back off instead.
_STALL_S = 1.0
# Records added to batches between two yields to the event loop, so that the other requests'
# acks and small requests go on while a large body's records are added (~1 ms).
_YIELD_EVERY = 256
# What stop() allows past the ack timeout for closing producers (their sender's last requests).
_CLOSE_MARGIN_S = 5.0


@dataclass(frozen=True)
class PublisherSettings:
    """What the publisher needs to know; built by ``relay.settings``."""

    connection: KafkaConnection
    topic: str = "k8s-audit"
    dead_letter_topic: str = "k8s-audit.dead-letter"
    partitions: int = 12
    replication_factor: int = 1
    compression: str = "zstd"
    ack_timeout: float = 10.0
    max_message_bytes: int = 1048576
    linger_ms: int = 5


@dataclass(eq=False)
class _Producer:
    """One aiokafka producer and the partition batches filled for it."""

    producer: AIOKafkaProducer
    batches: PartitionBatches
    number: int
    probe: asyncio.Task[None] | None = None
    probed_at: float = 0.0
    # Set when given up because no broker answered: then nothing is sent again on a new one.
    unreachable: str | None = None


class KafkaPublisher(AsyncResource):
    """Owns the producer. ``relay.edge.server`` starts it before serving and stops it after.

    ``start()`` returns at once; the connection (and topic creation) is retried in the
    background, with backoff, until it succeeds, so a relay can start while Kafka is down.
    ``publish()`` is called by the delivery layer for the records of one request. ``connected``
    is true while a producer is in place that has not failed a batch or missed an ack timeout.
    """

    def __init__(self, settings: PublisherSettings, metrics: RelayMetrics) -> None:
        self.settings = settings
        self._metrics = metrics
        self._topics = {EVENTS: settings.topic, DEAD_LETTER: settings.dead_letter_topic}
        self._current: _Producer | None = None
        self._producers_made = 0
        self._connect_task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._installed = asyncio.Event()
        self._started = False
        self._durability_checked = False
        # Failed attempts since the last acknowledgement: the reconnect delay grows with them.
        self._attempts = 0
        self._outage = OutageLog(settings.connection.bootstrap)
        self._compress = _COMPRESSORS.get(settings.compression)
        # Bytes of records still in a producer's batches whose request has already been
        # answered (503, or spooled): the in-flight bound counts them with the live requests.
        self.unanswered_bytes = 0
        self.delivered_everything = False
        metrics.kafka_connected.set(0)

    @property
    def connected(self) -> bool:
        return self._current is not None

    async def start(self) -> None:
        if not self._started:
            self._started = True
            self._connect_soon()

    async def stop(self) -> None:
        """Deliver what the producer holds and close, within ``ack_timeout`` + 5 s; idempotent.

        Called by ``relay.edge.server`` once no request is left. Sets ``delivered_everything``:
        whether a producer was in place and Kafka took all it held before the ack timeout.
        """
        self._started = False
        deadline = asyncio.get_running_loop().time() + self.settings.ack_timeout + _CLOSE_MARGIN_S
        if self._connect_task is not None:
            self._connect_task.cancel()
            await asyncio.gather(self._connect_task, return_exceptions=True)
            self._connect_task = None
        current, self._current = self._current, None
        self._installed.clear()
        self.delivered_everything = False
        if current is not None:
            # Records whose request timed out may still wait for their batch to leave.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.ack_timeout):
                    await current.batches.drain()
                    await current.producer.flush()
                    self.delivered_everything = True
            self._closing.add(asyncio.create_task(self._close(current)))
        if self._closing:
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.gather(*self._closing, return_exceptions=True)
                log.info("kafka producer closed")
            except TimeoutError:
                log.error("kafka producers still closing at the shutdown deadline; abandoned")
            self._closing.clear()

    def fits(self, value: bytes) -> bool:
        """Whether a value, compressed as the producer will, stays under the broker's limit."""
        limit = self.settings.max_message_bytes - _BATCH_OVERHEAD
        if len(value) <= limit:
            return True
        if self._compress is None:
            return False
        return len(memoryview(self._compress(value))) <= limit  # type: ignore[arg-type]

    async def publish(self, records: Sequence[OutboundRecord]) -> None:
        """Send ``records`` and return once Kafka acknowledged every one of them.

        Raises KafkaUnavailable at once when no producer is in place, as soon as no broker
        answers, or when the acks do not all arrive within the ack timeout (a batch that failed
        while the brokers answer is sent again on a new producer while that time lasts; a record
        a broker refuses for itself goes to the dead-letter topic instead, ``relay.kafka.
        refusals``). Records sent before a failure may still arrive: the caller answers with an
        error and the sender retries (at-least-once).
        """
        current = self._current
        if current is None:
            raise KafkaUnavailable("not connected to Kafka")
        started = time.monotonic()
        pending = records
        alone = False  # each record in a batch of its own, to find the one a broker refuses
        held: dict[asyncio.Future[None], int] = {}  # each batch's future: bytes of ours in it
        try:
            async with asyncio.timeout(self.settings.ack_timeout):
                while pending:
                    failed = await self._send(current, pending, held, alone=alone)
                    if not failed:
                        break
                    self._abandon(current, failed[0][1])
                    if current.unreachable is not None:
                        raise KafkaUnavailable(f"Kafka unreachable: {current.unreachable}")
                    pending = self._after_failure(failed, alone)
                    alone = True
                    await self._installed.wait()
                    current = self._current or current
        except TimeoutError as exc:
            reason = f"no acknowledgement within {self.settings.ack_timeout:g}s"
            self._abandon(current, reason)
            raise KafkaUnavailable(f"Kafka did not acknowledge: {reason}") from exc
        finally:
            self._hold_unanswered(held)
        self._acknowledged(time.monotonic() - started)

    def _hold_unanswered(self, held: dict[asyncio.Future[None], int]) -> None:
        """Count the bytes of a request's records that outlive its answer until their batch is
        acknowledged or failed (an abandoned producer fails its batches within its close)."""
        for ack, size in held.items():
            if not ack.done():
                self.unanswered_bytes += size
                self._metrics.unanswered_bytes.inc(size)
                ack.add_done_callback(partial(self._release_unanswered, size))

    def _release_unanswered(self, size: int, ack: asyncio.Future[None]) -> None:
        self.unanswered_bytes -= size
        self._metrics.unanswered_bytes.dec(size)

    async def _send(
        self,
        current: _Producer,
        records: Sequence[OutboundRecord],
        held: dict[asyncio.Future[None], int],
        *,
        alone: bool,
    ) -> list[tuple[OutboundRecord, BaseException]]:
        """Add each record to its partition's open batch (``alone``: a batch of its own),
        counting its bytes in ``held``; the records of batches that failed, each with its
        batch's error."""
        acks: list[asyncio.Future[None]] = []
        partitions: dict[str, list[int]] = {}
        try:
            for record in records:
                topic = self._topics[record.topic]
                known = partitions.get(topic)
                if known is None:
                    known = partitions[topic] = sorted(await current.producer.partitions_for(topic))
                ack = current.batches.add(topic, known, record, alone=alone)
                held[ack] = held.get(ack, 0) + record.size
                acks.append(ack)
                if len(acks) % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # a large request must not hold the loop
        except KafkaError as exc:  # the topic's metadata could not be had
            return [(record, exc) for record in records]
        await self._wait(current, set(acks))
        return [
            (record, error)
            for record, ack in zip(records, acks, strict=True)
            if (error := ack.exception()) is not None
        ]

    def _after_failure(
        self, failed: list[tuple[OutboundRecord, BaseException]], alone: bool
    ) -> list[OutboundRecord]:
        """What to send next on a new producer: the failed records, each in a batch of its own
        from now on; a record that failed alone for itself (``refusals``) as a dead letter."""
        pending = []
        limit = self.settings.max_message_bytes // 2
        for record, error in failed:
            if alone and refused_for_itself(error):
                log.warning("Kafka refused a record for itself (%s): dead-lettered", error)
                self._metrics.events_refused.inc()
                pending.append(refusal_record(record, error, limit))
            else:
                pending.append(record)
        self._metrics.records_resent.inc(len(failed))
        return pending

    async def _wait(self, current: _Producer, acks: set[asyncio.Future[None]]) -> None:
        """Wait for ``acks``; give ``current`` up as soon as no broker answers while they wait."""
        while acks:
            # asyncio.wait, not gather: a timeout must not cancel the shared batch futures.
            _, acks = await asyncio.wait(acks, timeout=_STALL_S)
            if acks and self._current is current:
                if current.probe is None and time.monotonic() - current.probed_at >= _STALL_S:
                    current.probe = asyncio.create_task(self._probe(current))
                if current.probe is not None:
                    await asyncio.shield(current.probe)

    async def _probe(self, current: _Producer) -> None:
        """Ask for the cluster's metadata; abandon ``current`` when no broker answers in time."""
        try:
            async with asyncio.timeout(_STALL_S):
                await current.producer.client.fetch_all_metadata()
        except (KafkaError, OSError, TimeoutError) as exc:
            if self._current is current:
                current.unreachable = f"no broker answers ({exc or type(exc).__name__})"
                self._abandon(current, current.unreachable)
        finally:
            current.probe, current.probed_at = None, time.monotonic()

    def _acknowledged(self, seconds: float) -> None:
        self._attempts = 0
        self._outage.acknowledged()
        self._metrics.kafka_ack_seconds.observe(seconds)
        self._metrics.kafka_last_ack.set(time.time())

    def _abandon(self, current: _Producer, reason: object) -> None:
        """Give up ``current`` (once, whoever calls first) and connect a new producer."""
        if self._current is not current:
            return
        self._current = None
        self._installed.clear()
        self._metrics.kafka_connected.set(0)
        self._metrics.producer_restarts.inc()
        self._attempts += 1
        self._outage.failed(f"producer {current.number} failed ({reason}); replacing it")
        task = asyncio.create_task(self._close(current), name=f"kafka-close-{current.number}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        self._connect_soon()

    async def _close(self, current: _Producer) -> None:
        """Fail what ``current`` still holds and close it; bounded by the ack timeout + 5 s."""
        try:
            async with asyncio.timeout(self.settings.ack_timeout + _CLOSE_MARGIN_S):
                await close_given_up(current.producer)
        except TimeoutError:
            log.error("kafka producer %d did not close in time; abandoned", current.number)

    def _connect_soon(self) -> None:
        if self._started and (self._connect_task is None or self._connect_task.done()):
            self._connect_task = asyncio.create_task(self._connect(), name="kafka-connect")

    async def _connect(self) -> None:
        while True:
            if self._attempts:
                delay = min(_MAX_CONNECT_DELAY, _FIRST_CONNECT_DELAY * 2 ** (self._attempts - 1))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            producer = AIOKafkaProducer(
                **self.settings.connection.client_kwargs(),
                acks="all",
                enable_idempotence=True,
                compression_type=self.settings.compression if self._compress else None,
                linger_ms=self.settings.linger_ms,
                max_batch_size=1 << 20,
                max_request_size=16 << 20,
                request_timeout_ms=int(self.settings.ack_timeout * 1000),
            )
            try:
                await producer.start()
                await self._ensure_topics()
            except (KafkaError, OSError) as exc:
                await producer.stop()
                self._attempts += 1
                self._outage.failed(f"cannot connect ({exc})")
                continue
            except asyncio.CancelledError:
                await producer.stop()  # stopped while connecting: close what was half opened
                raise
            self._producers_made += 1
            self._current = _Producer(producer, PartitionBatches(producer), self._producers_made)
            self._installed.set()
            self._metrics.kafka_connected.set(1)
            log.info(
                "kafka producer %d connected to %s",
                self._producers_made,
                self.settings.connection.bootstrap,
            )
            return

    async def _ensure_topics(self) -> None:
        admin = AIOKafkaAdminClient(**self.settings.connection.client_kwargs())
        await admin.start()
        try:
            names = self._topics.values()
            settings = self.settings
            await ensure_topics(admin, names, settings.partitions, settings.replication_factor)
            if not self._durability_checked:
                await warn_if_not_replicated(admin, names)
                self._durability_checked = True
        finally:
            await admin.close()
