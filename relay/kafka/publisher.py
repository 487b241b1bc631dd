"""The relay's Kafka producer: connects in the background, creates topics, publishes batches,
and replaces the producer whenever it stops delivering (``audit_common.kafka_producer``).

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
is one, and lives in ``publish``: whatever fails or outlasts a batch, the producer is given up,
a new one (a new producer id) is connected, and the records that were not acknowledged are sent
again on it while the request's ack timeout lasts; requests that arrive meanwhile wait for it
within theirs. At least once: a record of an abandoned batch may have been written before it
failed, so ``relay_records_resent_total`` counts the possible duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from audit_common.kafka_producer import Generation, RecoveringProducer, refused_for_itself
from audit_common.resource import AsyncResource
from relay.events.records import DEAD_LETTER, EVENTS, OutboundRecord
from relay.kafka.outage import OutageLog
from relay.kafka.partition_batches import PartitionBatches
from relay.kafka.refusals import refusal_record
from relay.kafka.stall_probe import StallProbe
from relay.kafka.topics import ensure_topics, warn_if_not_replicated
from relay.metrics import RelayMetrics

log = logging.getLogger(__name__)

_COMPRESSORS: dict[str, Callable[[bytes], object]] = {
    "lz4": cramjam.lz4.compress,
    "zstd": cramjam.zstd.compress,
    "gzip": cramjam.gzip.compress,
}
# Room for the record batch and the record's own fields around its value, key and headers.
_BATCH_OVERHEAD = 4096
# What a record header costs besides its name and value (their varint lengths), at most.
_HEADER_OVERHEAD = 10
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
    # Seconds of waiting for acks before asking whether any broker answers; each probe's
    # timeout; how many probes in a row must go unanswered before the producer is given up.
    stall_after: float = 1.0
    probe_timeout: float = 1.0
    probe_misses: int = 3


@dataclass(eq=False)
class _Producer:
    """One producer of the relay and the partition batches filled for it."""

    generation: Generation
    batches: PartitionBatches
    # Set when given up because no broker answered: then nothing is sent again on a new one.
    unreachable: str | None = None
    # When a request sent on it was last acknowledged (time.monotonic()).
    acknowledged_at: float = float("-inf")


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
        self._durability_checked = False
        self._outage = OutageLog(settings.connection.bootstrap)
        self._compress = _COMPRESSORS.get(settings.compression)
        self._producers = RecoveringProducer(
            self._make_producer,
            name="kafka",
            close_timeout=settings.ack_timeout + _CLOSE_MARGIN_S,
            prepare=self._ensure_topics,
            on_failure=self._outage.failed,
            on_installed=self._installed,
            on_given_up=self._given_up,
        )
        self._probe = StallProbe(
            settings.connection,
            timeout=settings.probe_timeout,
            misses=settings.probe_misses,
            interval=settings.stall_after,
        )
        # Bytes of records still in a producer's batches whose request has already been
        # answered (503, or spooled): the in-flight bound counts them with the live requests.
        self.unanswered_bytes = 0
        self.delivered_everything = False
        metrics.kafka_connected.set(0)

    @property
    def connected(self) -> bool:
        return self._producers.current is not None

    async def start(self) -> None:
        await self._probe.start()
        await self._producers.start()

    async def stop(self) -> None:
        """Deliver what the producer holds and close, within ``ack_timeout`` + 5 s; idempotent.

        Called by ``relay.edge.server`` once no request is left. Sets ``delivered_everything``:
        whether a producer was in place and Kafka took all it held before the ack timeout.
        """
        current = self._current
        self.delivered_everything = False
        if current is not None and self._producers.current is current.generation:
            # Records whose request timed out may still wait for their batch to leave.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.ack_timeout):
                    await current.batches.drain()
                    await current.generation.producer.flush()
                    self.delivered_everything = True
        self._current = None
        await self._producers.stop()
        await self._probe.stop()
        self._metrics.kafka_connected.set(0)
        log.info("kafka producer closed")

    def fits(
        self, value: bytes, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> bool:
        """Whether a record, its value compressed as the producer will, stays under the
        broker's limit with its key and headers."""
        extra = len(key or b"") + sum(len(n) + len(v) + _HEADER_OVERHEAD for n, v in headers)
        limit = self.settings.max_message_bytes - _BATCH_OVERHEAD - extra
        if len(value) <= limit:
            return True
        if self._compress is None:
            return False
        return len(memoryview(self._compress(value))) <= limit  # type: ignore[arg-type]

    async def publish(self, records: Sequence[OutboundRecord]) -> None:
        """Send ``records`` and return once Kafka acknowledged every one of them.

        While a producer is being connected (at start, or replacing one given up), waits for it
        within the ack timeout. Raises KafkaUnavailable at once while Kafka is out of reach, as
        soon as no broker answers, or when the acks do not all arrive within the ack timeout (a
        batch that failed while the brokers answer is sent again on a new producer while that
        time lasts; a record a broker refuses for itself goes to the dead-letter topic instead,
        ``relay.kafka.refusals``). Records sent before a failure may still arrive: the caller
        answers with an error and the sender retries (at-least-once).
        """
        started = time.monotonic()
        pending = records
        alone = False  # each record in a batch of its own, to find the one a broker refuses
        held: dict[asyncio.Future[None], int] = {}  # each batch's future: bytes of ours in it
        current: _Producer | None = None
        try:
            async with asyncio.timeout(self.settings.ack_timeout):
                while pending:
                    current = await self._producer()
                    failed = await self._send(current, pending, held, alone=alone)
                    if not failed:
                        break
                    self._producers.give_up(current.generation, failed[0][1])
                    if current.unreachable is not None:
                        raise KafkaUnavailable(f"Kafka unreachable: {current.unreachable}")
                    pending = self._after_failure(failed, alone)
                    alone = True
        except TimeoutError as exc:
            reason = f"no acknowledgement within {self.settings.ack_timeout:g}s"
            # A producer that acknowledged other requests meanwhile is working: this request
            # waited behind a backlog (the resends after an outage). Giving it up would fail
            # every batch in flight on it, and those requests would time out on the next one.
            if current is not None and current.acknowledged_at < started:
                self._producers.give_up(current.generation, reason)
            raise KafkaUnavailable(f"Kafka did not acknowledge: {reason}") from exc
        finally:
            self._hold_unanswered(held)
        now = time.monotonic()
        if current is not None:
            current.acknowledged_at = now
        self._acknowledged(now - started)

    async def _producer(self) -> _Producer:
        """The producer in place, once there is one (``RecoveringProducer.wait``)."""
        generation = await self._producers.wait()
        current = self._current
        assert current is not None and current.generation is generation
        return current

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
    ) -> list[tuple[OutboundRecord, BaseException, int]]:
        """Add each record to its partition's open batch (``alone``: a batch of its own),
        counting its bytes in ``held``; the records of batches that failed, each with its
        batch's error and how many records (every request's) that batch held."""
        batches = []
        partitions: dict[str, list[int]] = {}
        producer = current.generation.producer
        try:
            for record in records:
                topic = self._topics[record.topic]
                known = partitions.get(topic)
                if known is None:
                    known = partitions[topic] = sorted(await producer.partitions_for(topic))
                # A record over half the limit goes alone: two such would make a batch the
                # broker refuses, and one it refuses for itself is then known at once.
                big = record.size > self.settings.max_message_bytes // 2
                batch = current.batches.add(topic, known, record, alone=alone or big)
                held[batch.acked] = held.get(batch.acked, 0) + record.size
                batches.append(batch)
                if len(batches) % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # a large request must not hold the loop
        except KafkaError as exc:  # the topic's metadata could not be had
            return [(record, exc, 0) for record in records]
        await self._wait(current, {batch.acked for batch in batches})
        # Unless no broker answered: then the batches of a given-up producer still wait.
        unreachable = KafkaError(current.unreachable)
        return [
            (record, error, batch.records)
            for record, batch in zip(records, batches, strict=True)
            if (error := batch.acked.exception() if batch.acked.done() else unreachable)
        ]

    def _after_failure(
        self, failed: list[tuple[OutboundRecord, BaseException, int]], alone: bool
    ) -> list[OutboundRecord]:
        """What to send next on a new producer: the failed records, each in a batch of its own
        from now on; a record refused for itself in a batch of its own (``refusals``) as a dead
        letter, at its first refusal."""
        pending = []
        limit = self.settings.max_message_bytes // 2
        for record, error, batch_records in failed:
            if refused_for_itself(error) and (alone or batch_records == 1):
                log.warning("Kafka refused a record for itself (%s): dead-lettered", error)
                self._metrics.events_refused.inc()
                pending.append(refusal_record(record, error, limit))
            else:
                pending.append(record)
        self._metrics.records_resent.inc(len(failed))
        return pending

    async def _wait(self, current: _Producer, acks: set[asyncio.Future[None]]) -> None:
        """Wait for ``acks``; give ``current`` up as soon as no broker answers while they wait
        (``relay.kafka.stall_probe``)."""
        while acks:
            # asyncio.wait, not gather: a timeout must not cancel the shared batch futures.
            _, acks = await asyncio.wait(acks, timeout=self.settings.stall_after)
            if acks and self._producers.current is current.generation:
                reason = await self._probe.unreachable()
                if reason is not None and self._producers.current is current.generation:
                    current.unreachable = f"no broker answers ({reason})"
                    self._producers.give_up(
                        current.generation, current.unreachable, reachable=False
                    )
                    return

    def _acknowledged(self, seconds: float) -> None:
        self._producers.acknowledged()
        self._outage.acknowledged()
        self._metrics.kafka_ack_seconds.observe(seconds)
        self._metrics.kafka_last_ack.set(time.time())

    def _given_up(self, generation: Generation) -> None:
        self._metrics.kafka_connected.set(0)
        self._metrics.producer_restarts.inc()

    def _installed(self, generation: Generation) -> None:
        self._current = _Producer(generation, PartitionBatches(generation.producer))
        self._metrics.kafka_connected.set(1)

    def _make_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **self.settings.connection.client_kwargs(),
            acks="all",
            enable_idempotence=True,
            compression_type=self.settings.compression if self._compress else None,
            linger_ms=self.settings.linger_ms,
            max_batch_size=1 << 20,
            max_request_size=16 << 20,
            request_timeout_ms=int(self.settings.ack_timeout * 1000),
        )

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
