"""One idempotent Kafka producer at a time, given up and replaced whenever it stops delivering.

Shared by the relay's publisher (``relay.kafka.publisher``), the consumers' dead-letter producer
(``consumers.dead_letters``) and the alerts producer (``consumers.sinks.alerts``). Why a failed
batch means a new producer is in ``audit_common.kafka_give_up``: aiokafka never takes back the
sequence numbers of a batch that failed, so the broker answers every later batch of that
partition with OUT_OF_ORDER_SEQUENCE_NUMBER for as long as the producer lives
(aio-libs/aiokafka#1017). The same holds once its sender task died: every ``send()`` raises.

So the rule is one: a producer that failed a batch, whose sender died, or that did not
acknowledge in time is given up (closed in the background by ``close_given_up``), a new one is
connected with backoff, and the records that were not acknowledged are sent again on it. A
record the broker refuses for itself (``refused_for_itself``) is final once it failed in a batch
of its own: sending it again cannot help. At least once: a record of a given-up batch may have
been written before the batch failed, so a record sent again may arrive twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from aiokafka.partitioner import DefaultPartitioner

from audit_common.errors import KafkaUnavailable
from audit_common.kafka_give_up import close_given_up
from audit_common.resource import AsyncResource

log = logging.getLogger(__name__)

# A batch fails for one record in it that the broker will never take, however often it is sent:
# over the topic's max.message.bytes, a batch over it, a timestamp outside the topic's window, a
# record it cannot read. Every other failure is the cluster's or the producer's.
RECORD_ERRORS = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidTimestampError,
    CorruptRecordException,
)
# Reconnect delays: doubling from the first to the longest, each cut by up to half at random so
# that many processes do not knock on a returning broker in step. The longest is Kafka's own
# clients' reconnect.backoff.max.ms: every second of delay once the cluster is writable again
# is a second of 503s (a cluster test found up to 6 s of them with 5 s).
FIRST_CONNECT_DELAY = 0.25
MAX_CONNECT_DELAY = 1.0
_PARTITIONER = DefaultPartitioner()


def refused_for_itself(error: BaseException | None) -> bool:
    """Whether ``error`` failed a batch because of a record in it, for good."""
    return isinstance(error, RECORD_ERRORS)


@dataclass(frozen=True)
class KafkaRecord:
    """One record for ``RecoveringProducer.send_all``."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp_ms: int | None = None


@dataclass(eq=False)
class Generation:
    """One producer of a ``RecoveringProducer``; ``number`` counts them from 1."""

    producer: AIOKafkaProducer
    number: int

    @property
    def sender_died(self) -> bool:
        task = self.producer._sender.sender_task
        return task is not None and task.done()


class RecoveringProducer(AsyncResource):
    """Keeps one connected producer (``current``) and replaces it when given up.

    ``make`` builds an unstarted producer (idempotent, acks=all); ``prepare``, if given, runs
    after each connect (the relay creates its topics there) and a KafkaError or OSError from it
    counts as a failed attempt. ``start()`` returns at once and connects in the background, with
    backoff, until it succeeds; ``stop()`` closes the producer within ``close_timeout``.
    ``on_failure`` is told of every failed connect attempt and give-up (a log line by default),
    ``on_installed`` of every producer put in place, ``on_given_up`` of every one given up.
    """

    def __init__(
        self,
        make: Callable[[], AIOKafkaProducer],
        *,
        name: str,
        close_timeout: float,
        prepare: Callable[[], Awaitable[None]] | None = None,
        on_failure: Callable[[str], None] | None = None,
        on_installed: Callable[[Generation], None] | None = None,
        on_given_up: Callable[[Generation], None] | None = None,
    ) -> None:
        self.name = name
        self.current: Generation | None = None
        self.replacements = 0
        self._make = make
        self._prepare = prepare
        self._on_failure = on_failure or (lambda reason: log.warning("%s: %s", name, reason))
        self._on_installed = on_installed
        self._on_given_up = on_given_up
        self._close_timeout = close_timeout
        self._made = 0
        self._attempts = 0  # failed attempts since the last acknowledgement: the backoff grows
        self._started = False
        # True from start() or a give-up until a connect attempt fails: waiting for the next
        # producer is then worth it; once an attempt failed, Kafka is out of reach.
        self._hopeful = False
        # Set and replaced whenever ``current`` or ``_hopeful`` changes: waiters look again.
        self._changed = asyncio.Event()
        self._connect_task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if not self._started:
            self._started = self._hopeful = True
            self._connect_soon()

    async def stop(self) -> None:
        """Close the producer (what it still holds is failed) and every one being closed."""
        self._started = False
        if self._connect_task is not None:
            self._connect_task.cancel()
            await asyncio.gather(self._connect_task, return_exceptions=True)
            self._connect_task = None
        current, self.current = self.current, None
        self._signal()
        if current is not None:
            self._closing.add(asyncio.create_task(self._close(current)))
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
            self._closing.clear()

    async def wait(self) -> Generation:
        """The producer in place, waiting for it while one is being connected after ``start``
        or a give-up (callers bound the wait). Raises KafkaUnavailable at once while Kafka is
        out of reach (a connect attempt failed) or when not started."""
        while True:
            current = self.current
            if current is not None and current.sender_died:
                self.give_up(current, "its sender task died")
                continue
            if current is not None:
                return current
            if not (self._started and self._hopeful):
                raise KafkaUnavailable("not connected to Kafka")
            await self._changed.wait()

    def give_up(self, generation: Generation, reason: object, *, reachable: bool = True) -> None:
        """Close ``generation`` in the background and connect a new producer; only the first
        call for a generation counts. ``reachable``: whether its brokers still answer, so that
        waiting for the next producer is worth it."""
        if self.current is not generation:
            return
        self.current = None
        self.replacements += 1
        self._attempts += 1
        self._hopeful = reachable
        self._signal()
        if self._on_given_up is not None:
            self._on_given_up(generation)
        self._on_failure(f"producer {generation.number} failed ({reason}); replacing it")
        task = asyncio.create_task(self._close(generation), name=f"{self.name}-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        self._connect_soon()

    def acknowledged(self) -> None:
        """Called when Kafka acknowledged a send: the next reconnect starts without delay."""
        self._attempts = 0

    async def send_all(
        self, records: Sequence[KafkaRecord], within: float
    ) -> list[BaseException | None]:
        """Send ``records`` and wait until each is acknowledged or refused for itself.

        Returns, for each record, None or the error a broker refused it with (it failed in a
        batch of its own, or aiokafka refused it before sending). Records of a batch that failed
        otherwise are sent again on a new producer, each in a batch of its own, for up to
        ``within`` seconds in all. Raises KafkaUnavailable while Kafka is out of reach, or when
        the time is out (the producer that did not acknowledge is given up).
        """
        results: list[BaseException | None] = [None] * len(records)
        todo = list(range(len(records)))
        alone = False
        generation: Generation | None = None
        try:
            async with asyncio.timeout(within):
                while todo:
                    generation = await self.wait()
                    batch = [records[i] for i in todo]
                    errors = await self._send(generation, batch, alone=alone)
                    todo = self._sort_out(generation, todo, errors, results, alone=alone)
                    alone = True
        except TimeoutError as exc:
            if generation is not None:
                self.give_up(generation, f"no acknowledgement within {within:g} s")
            raise KafkaUnavailable(f"Kafka did not acknowledge within {within:g} s") from exc
        return results

    def _sort_out(
        self,
        generation: Generation,
        todo: list[int],
        errors: list[BaseException | None],
        results: list[BaseException | None],
        *,
        alone: bool,
    ) -> list[int]:
        """Put the final errors of ``todo``'s records in ``results``; the records to send again.
        A batch that failed gives ``generation`` up, even when its record is final."""
        retry = []
        failed: BaseException | None = None
        for index, error in zip(todo, errors, strict=True):
            if isinstance(error, _Local):  # nothing was numbered for it
                results[index] = error.error
                continue
            failed = failed or error
            if alone and refused_for_itself(error):
                results[index] = error
            elif error is not None:
                retry.append(index)
        if failed is not None:
            self.give_up(generation, failed)
        else:
            self.acknowledged()
        return retry

    async def _send(
        self, generation: Generation, records: Sequence[KafkaRecord], *, alone: bool
    ) -> list[BaseException | None]:
        """Send ``records`` on ``generation`` (``alone``: each in a batch of its own) and wait
        for every one; the error of each, or None."""
        producer = generation.producer
        sent: list[asyncio.Future[object] | BaseException] = []
        for record in records:
            try:
                sent.append(await self._send_one(producer, record, alone=alone))
            except RECORD_ERRORS as exc:  # aiokafka refused it before sending: nothing numbered
                sent.append(_Local(exc))
            except KafkaError as exc:  # the sender died, or metadata cannot be had
                sent.extend([exc] * (len(records) - len(sent)))
                break
        futures = [item for item in sent if isinstance(item, asyncio.Future)]
        if futures:
            await asyncio.wait(futures)
        return [_error_of(item) for item in sent]

    @staticmethod
    async def _send_one(
        producer: AIOKafkaProducer, record: KafkaRecord, *, alone: bool
    ) -> asyncio.Future[object]:
        if not alone:
            return await producer.send(  # type: ignore[no-any-return]
                record.topic,
                record.value,
                key=record.key,
                headers=list(record.headers),
                timestamp_ms=record.timestamp_ms,
            )
        batch = producer.create_batch()
        batch.append(
            key=record.key,
            value=record.value,
            timestamp=record.timestamp_ms,
            headers=list(record.headers),
        )
        partitions = sorted(await producer.partitions_for(record.topic))
        partition = _PARTITIONER(record.key, partitions, partitions)
        return await producer.send_batch(  # type: ignore[no-any-return]
            batch, record.topic, partition=partition
        )

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _connect_soon(self) -> None:
        if self._started and (self._connect_task is None or self._connect_task.done()):
            self._connect_task = asyncio.create_task(self._connect(), name=f"{self.name}-connect")

    async def _connect(self) -> None:
        while True:
            if self._attempts:
                delay = min(MAX_CONNECT_DELAY, FIRST_CONNECT_DELAY * 2 ** (self._attempts - 1))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            producer = self._make()
            try:
                await producer.start()
                if self._prepare is not None:
                    await self._prepare()
            except (KafkaError, OSError) as exc:
                await producer.stop()
                self._attempts += 1
                self._hopeful = False
                self._signal()
                self._on_failure(f"cannot connect ({exc})")
                continue
            except asyncio.CancelledError:
                await producer.stop()  # stopped while connecting: close what was half opened
                raise
            self._made += 1
            self.current = Generation(producer, self._made)
            self._hopeful = True
            self._signal()
            if self._on_installed is not None:
                self._on_installed(self.current)
            log.info("%s: producer %d connected", self.name, self._made)
            return

    async def _close(self, generation: Generation) -> None:
        """Fail what ``generation`` still holds and close it, within ``close_timeout``."""
        try:
            async with asyncio.timeout(self._close_timeout):
                await close_given_up(generation.producer)
        except TimeoutError:
            log.error("%s: producer %d did not close in time", self.name, generation.number)


class _Local(Exception):
    """A record aiokafka refused before numbering it (over its ``max_request_size``)."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(str(error))
        self.error = error


def _error_of(item: asyncio.Future[object] | BaseException) -> BaseException | None:
    if isinstance(item, BaseException):
        return item
    error: BaseException | None = (
        KafkaError("the send was cancelled") if item.cancelled() else item.exception()
    )
    return error
