"""Closing an idempotent producer that was given up, whatever its batches wait for.

Both programs give a producer up once a batch of it failed: aiokafka numbers a batch before
sending it and never takes the numbers back, so the broker refuses every later batch of that
partition with OUT_OF_ORDER_SEQUENCE_NUMBER for as long as the producer lives
(aio-libs/aiokafka#1017; ``relay.kafka.publisher`` says more). aiokafka has no public way to
give up batches: an idempotent producer's ``stop()`` waits for them without end. So this
reaches into two of its internals (aiokafka is pinned below 0.15, and the tests of the relay's
publisher and of the alerts sink would catch a change): stop the sender (which lets the produce
requests in flight finish, within the request timeout), fail every batch left, which settles
the requests waiting on them, and only then stop the producer.
"""

from __future__ import annotations

import contextlib

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError


async def close_given_up(producer: AIOKafkaProducer) -> None:
    """Fail what ``producer`` still holds and stop it. Called by ``relay.kafka.publisher`` and
    ``consumers.sinks.alerts`` under a time bound of their own; raises nothing of its own."""
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
