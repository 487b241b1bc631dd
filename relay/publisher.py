"""The relay's Kafka producer: connects in the background, creates topics, publishes batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cramjam
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from relay.errors import KafkaUnavailable
from relay.kafka_connection import KafkaConnection
from relay.partition_batches import PartitionBatches
from relay.records import DEAD_LETTER, EVENTS, OutboundRecord
from relay.resource import AsyncResource

log = logging.getLogger(__name__)

_COMPRESSORS: dict[str, Callable[[bytes], object]] = {
    "lz4": cramjam.lz4.compress,
    "zstd": cramjam.zstd.compress,
    "gzip": cramjam.gzip.compress,
}
# Room for the record batch and record headers around the largest value, in bytes.
_BATCH_OVERHEAD = 4096
# Longest wait between two attempts to connect, in seconds.
_MAX_CONNECT_DELAY = 5.0


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


class KafkaPublisher(AsyncResource):
    """Owns the producer. ``relay.server`` starts it before serving and stops it after.

    ``start()`` returns at once; the connection (and topic creation) is retried in the
    background until it succeeds, so a relay can start while Kafka is down. ``publish()`` is
    called by the request handler for the records of one request.
    """

    def __init__(
        self, settings: PublisherSettings, ack_observer: Callable[[float], None] | None = None
    ) -> None:
        self.settings = settings
        self._topics = {EVENTS: settings.topic, DEAD_LETTER: settings.dead_letter_topic}
        self._producer: AIOKafkaProducer | None = None
        self._batches: PartitionBatches | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._compress = _COMPRESSORS.get(settings.compression)
        self._ack_observer = ack_observer

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        if self._connect_task is None:
            self._connect_task = asyncio.create_task(self._connect(), name="kafka-connect")

    async def stop(self) -> None:
        """Flush what the producer holds and close it; idempotent."""
        if self._connect_task is not None:
            self._connect_task.cancel()
            await asyncio.gather(self._connect_task, return_exceptions=True)
            self._connect_task = None
        if self._producer is not None:
            producer, self._producer = self._producer, None
            batches, self._batches = self._batches, None
            self._connected.clear()
            if batches is not None:
                # Records whose request timed out may still wait for their batch to leave.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.ack_timeout):
                        await batches.drain()
            await producer.stop()
            log.info("kafka producer flushed and closed")

    async def _connect(self) -> None:
        delay = 0.2
        attempts = 0
        while True:
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
                attempts += 1
                # One warning per outage; the retries are news only when debugging.
                log.log(
                    logging.WARNING if attempts == 1 else logging.DEBUG,
                    "kafka not reachable at %s (%s); retrying every %.0fs at most",
                    self.settings.connection.bootstrap,
                    exc,
                    _MAX_CONNECT_DELAY,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_CONNECT_DELAY)
                continue
            except asyncio.CancelledError:
                await producer.stop()  # stopped while connecting: close what was half opened
                raise
            self._producer = producer
            self._batches = PartitionBatches(producer)
            self._connected.set()
            log.info("kafka producer connected to %s", self.settings.connection.bootstrap)
            return

    async def _ensure_topics(self) -> None:
        admin = AIOKafkaAdminClient(**self.settings.connection.client_kwargs())
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [name for name in self._topics.values() if name not in existing]
            for name in missing:
                topic = NewTopic(name, self.settings.partitions, self.settings.replication_factor)
                try:
                    await admin.create_topics([topic])
                    log.info("created topic %s with %d partitions", name, self.settings.partitions)
                except TopicAlreadyExistsError:
                    pass  # another worker or relay created it first
        finally:
            await admin.close()

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

        Raises KafkaUnavailable when not connected, on a Kafka error, or when the acks do not
        all arrive within the ack timeout. Records sent before a failure may still arrive:
        the caller answers with an error and the sender retries (at-least-once).
        """
        producer, batches = self._producer, self._batches
        if producer is None or batches is None:
            raise KafkaUnavailable("not connected to Kafka")
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.settings.ack_timeout):
                acks = await self._add(producer, batches, records)
                # asyncio.wait, not gather: a timeout must not cancel the shared batch futures.
                if acks:
                    await asyncio.wait(acks)
        except TimeoutError as exc:
            raise KafkaUnavailable(
                f"Kafka did not acknowledge within {self.settings.ack_timeout}s"
            ) from exc
        except KafkaError as exc:
            raise KafkaUnavailable(f"Kafka error: {exc}") from exc
        for ack in acks:
            if ack.exception() is not None:
                raise KafkaUnavailable(f"Kafka error: {ack.exception()}") from ack.exception()
        if self._ack_observer is not None:
            self._ack_observer(time.monotonic() - started)

    async def _add(
        self,
        producer: AIOKafkaProducer,
        batches: PartitionBatches,
        records: Sequence[OutboundRecord],
    ) -> set[asyncio.Future[None]]:
        """Put each record in its partition's open batch; the futures of those batches."""
        partitions: dict[str, list[int]] = {}
        acks = set()
        for record in records:
            topic = self._topics[record.topic]
            known = partitions.get(topic)
            if known is None:
                known = partitions[topic] = sorted(await producer.partitions_for(topic))
            acks.add(batches.add(topic, known, record))
        return acks
