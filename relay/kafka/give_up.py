"""Closing a producer the publisher gave up, whatever its batches wait for.

aiokafka has no public way to give up batches: an idempotent producer's ``stop()`` waits for
them without end. So this reaches into two of its internals (aiokafka is pinned below 0.15, and
``tests/relay/kafka/test_publisher.py`` would catch a change): stop the sender (which lets the
produce requests in flight finish, within the request timeout), fail every batch left, which
settles the requests waiting on them, and only then stop the producer.
"""

from __future__ import annotations

import contextlib

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError


async def close_given_up(producer: AIOKafkaProducer) -> None:
    """Fail what ``producer`` still holds and stop it. Called by ``relay.kafka.publisher`` in a
    background task, under its own time bound; raises nothing of its own."""
    await producer._sender.close()
    accumulator = producer._message_accumulator
    # A batch sent and put back for a retry still has the callback that takes it out of the
    # in-flight set once it is done: put it there, or that callback raises.
    unsent = [batch for batches in accumulator._batches.values() for batch in batches]
    accumulator._pending_batches.update(unsent)
    accumulator.fail_all(KafkaError("the producer was replaced"))
    for batch in unsent:  # retrieve the error its drain waiter got, or asyncio logs it
        with contextlib.suppress(KafkaError):
            await batch.wait_drain(0)
    await producer.stop()
