"""Record batches per partition, filled by every request at once, handed to aiokafka whole.

aiokafka keeps one produce request in flight per broker, carrying at most one record batch per
partition. While it is in flight, the records of every request that arrives go into one open
batch per partition; when the partition's previous batch has left, the open batch is handed to
the producer (``send_batch``) and a new one opens. So a produce request carries as much as the
old per-message ``send()`` path put in it, without a future, a partitioner call and an
accumulator lookup per message: each record costs one append to a C record builder, and each
batch one future that all its requests share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from relay.events.records import OutboundRecord

log = logging.getLogger(__name__)

_PARTITIONER = DefaultPartitioner()


@dataclass(eq=False)
class Batch:
    """One record batch of a partition; ``acked`` is resolved when Kafka acknowledged it."""

    builder: BatchBuilder
    acked: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def records(self) -> int:
        """How many records it holds, every request's."""
        return int(self.builder.record_count())


@dataclass
class _Partition:
    """The batches of one partition not yet handed to the producer, oldest first."""

    topic: str
    partition: int
    waiting: deque[Batch] = field(default_factory=deque)
    submitter: asyncio.Task[None] | None = None


class PartitionBatches:
    """Owned by ``relay.kafka.publisher.KafkaPublisher``, one per producer.

    ``add`` is called for each record of a request and returns the batch that holds it, whose
    future is resolved when Kafka acknowledged that batch (or failed with the KafkaError that
    failed it). ``drain`` waits until every record added is handed to the producer.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._partitions: dict[tuple[str, int], _Partition] = {}

    def add(
        self, topic: str, partitions: list[int], record: OutboundRecord, *, alone: bool = False
    ) -> Batch:
        """Append ``record`` to the open batch of its key's partition (murmur2, as Java does),
        or, ``alone``, put it in a batch of its own (to learn which record a broker refuses).

        ``partitions`` is the sorted list of the topic's partitions; returns the batch that
        holds it. Never waits.
        """
        partition = _PARTITIONER(record.key, partitions, partitions)
        state = self._partitions.get((topic, partition))
        if state is None:
            state = self._partitions[(topic, partition)] = _Partition(topic, partition)
        if alone or not state.waiting or not _append(state.waiting[-1].builder, record):
            batch = Batch(self._producer.create_batch())
            _append(batch.builder, record)  # an empty batch takes any record
            if alone:
                batch.builder.close()  # takes no other record
            state.waiting.append(batch)
        if state.submitter is None:
            state.submitter = asyncio.create_task(self._submit(state))
        return state.waiting[-1]

    async def _submit(self, state: _Partition) -> None:
        """Hand the partition's batches to the producer in order, each when it may take it."""
        try:
            while state.waiting:
                batch = state.waiting[0]
                try:
                    # Waits until the partition's previous batch has left; until then ``batch``
                    # stays open and takes the records of the requests that keep arriving.
                    sent = await self._producer.send_batch(
                        batch.builder, state.topic, partition=state.partition
                    )
                except KafkaError as exc:
                    state.waiting.popleft()
                    _settle(batch.acked, exc)
                    continue
                # No await since send_batch queued it: nothing was appended after that.
                state.waiting.popleft()
                batch.builder.close()
                sent.add_done_callback(lambda done, acked=batch.acked: _settle_from(acked, done))
        finally:
            state.submitter = None

    async def drain(self) -> None:
        """Wait until every batch is handed to the producer (before it is flushed and closed)."""
        submitters = [s.submitter for s in self._partitions.values() if s.submitter is not None]
        if submitters:
            await asyncio.gather(*submitters, return_exceptions=True)


def _append(builder: BatchBuilder, record: OutboundRecord) -> bool:
    metadata = builder.append(
        key=record.key,
        value=record.value,
        timestamp=record.timestamp_ms,
        headers=list(record.headers),  # the C record builder takes a list only
    )
    return metadata is not None


def _settle(acked: asyncio.Future[None], error: BaseException | None) -> None:
    if acked.done():
        return
    if error is None:
        acked.set_result(None)
        return
    acked.set_exception(error)
    # Every request waiting on it reads the error; this keeps a batch whose requests all timed
    # out from logging "exception never retrieved".
    acked.add_done_callback(lambda done: done.exception())


def _settle_from(acked: asyncio.Future[None], sent: asyncio.Future[Any]) -> None:
    if sent.cancelled():
        _settle(acked, KafkaError("the batch was cancelled"))
        return
    with contextlib.suppress(asyncio.CancelledError):
        _settle(acked, sent.exception())
