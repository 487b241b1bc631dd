"""The offsets of one group member: which are flushed, which are committed, and the lag.

An offset is marked flushed only once the sink's ``flush`` returned for its batch, and the sink
holds none of it (``Sink.held``); only flushed offsets are ever committed. The commit runs in
the background beside the next poll rather than before it: waiting for each commit's round-trip
cost a CSV consumer a third of its rate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from consumers.health import Health
from consumers.metrics import ConsumerMetrics

log = logging.getLogger(__name__)


class Offsets:
    """Made by ``consumers.runner.Runner``, which asks for the last commit at stop;
    ``consumers.consume_loop.ConsumeLoop`` marks batches flushed and asks for commits.

    Commits never raise a KafkaError: a transient failure keeps the offsets for the next
    commit, a rebalance drops them (the partitions' new owner consumes from the last commit).
    A commit that succeeds is progress for ``health``.
    """

    def __init__(
        self, consumer: AIOKafkaConsumer, metrics: ConsumerMetrics, health: Health
    ) -> None:
        self._consumer = consumer
        self._metrics = metrics
        self._health = health
        self._flushed: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self._committed: dict[TopicPartition, int] = {}
        # The offset after the last batch written, and the last offset released, per partition.
        self._written: dict[TopicPartition, int] = {}
        self._released: dict[TopicPartition, int] = {}
        self._in_flight: asyncio.Task[None] | None = None
        self._dropped = False  # flushed offsets a rebalance kept from being committed

    @property
    def all_committed(self) -> bool:
        """Whether every batch flushed was committed: False also after a rebalance dropped
        some, whose events the partitions' new owner consumes again."""
        return not self._flushed and not self._dropped

    @property
    def uncommitted(self) -> bool:
        """Whether offsets are flushed and wait for a commit."""
        return bool(self._flushed)

    def resumed_at(self, tp: TopicPartition, offset: int) -> None:
        """Where this member started reading ``tp``: the base of its lag until a commit."""
        self._committed.setdefault(tp, offset)

    def mark_written(self, tp: TopicPartition, next_offset: int) -> None:
        """The sink took the batch ending before ``next_offset``; ``release`` says how much of
        it is durable."""
        self._written[tp] = next_offset

    def release(self, held: Mapping[tuple[str, int], int]) -> None:
        """Mark flushed what was written, short of the first offset the sink still holds per
        (topic, partition) (``Sink.held``); only partitions whose offset moved."""
        for tp, written in self._written.items():
            offset = min(written, held.get((tp.topic, tp.partition), written))
            if offset > self._released.get(tp, -1):
                self._released[tp] = offset
                self._flushed[tp] = offset

    def commit_in_background(self) -> None:
        """Start committing what is flushed, unless nothing is or a commit is in flight.

        Called after every poll, so offsets flushed while a commit was in flight are committed
        after the next poll at the latest. An error the commit does not expect raises here.
        """
        if not self._flushed:
            return
        if self._in_flight is not None:
            if not self._in_flight.done():
                return
            self._in_flight.result()
        self._in_flight = asyncio.create_task(self._commit())

    async def commit_flushed(self) -> None:
        """Wait for the commit in flight, then commit whatever flushed offsets remain."""
        if self._in_flight is not None:
            await self._in_flight
            self._in_flight = None
        await self._commit()

    async def settle(self) -> None:
        """Let the commit in flight end (before its client closes), whatever its outcome."""
        if self._in_flight is not None and not self._in_flight.done():
            await asyncio.gather(self._in_flight, return_exceptions=True)

    def forget(self, revoked: Iterable[TopicPartition]) -> None:
        """Drop revoked partitions, whose offsets are now another member's."""
        for tp in revoked:
            self._flushed.pop(tp, None)
            self._written.pop(tp, None)
            self._released.pop(tp, None)
            if self._committed.pop(tp, None) is not None:
                self._metrics.lag.remove(tp.topic, str(tp.partition))

    def update_lag(self) -> int:
        """Export the lag of each assigned partition whose end and base are known; the sum."""
        total = 0
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            base = self._committed.get(tp)
            if highwater is not None and base is not None:
                self._metrics.lag.labels(tp.topic, str(tp.partition)).set(highwater - base)
                total += highwater - base
        return total

    async def _commit(self) -> None:
        offsets = dict(self._flushed)
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("offsets not committed, the group rebalanced: %s", exc)
            self._flushed.clear()
            self._dropped = True
            return
        except KafkaError as exc:
            log.warning("cannot commit offsets now, trying again after the next poll: %s", exc)
            return
        self._committed.update(offsets)
        self._health.progressed()
        for tp, offset in offsets.items():
            if self._flushed.get(tp) == offset:
                del self._flushed[tp]
        self.update_lag()
