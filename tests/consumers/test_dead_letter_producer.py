"""The consumers' dead-letter producer against a real broker: a failed batch gives its producer
up and the letters not acknowledged go out on a new one (``audit_common.kafka_producer``).
``test_dead_letters.py`` has the cutting of a letter."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest

from audit_common.errors import KafkaUnavailable
from audit_common.kafka_connection import KafkaConnection
from audit_common.kafka_producer import RecoveringProducer
from consumers.dead_letters import SEND_TIMEOUT_S, Letter, send_letters
from consumers.producers import producer_for
from tests.support.kafka import LocalBroker, create_topic, read_topic, unique_topic

pytestmark = pytest.mark.integration
# What the runner reads from the dead-letter topic; the topics here take less.
LIMIT = 1 << 20


@asynccontextmanager
async def dead_letter_producer(bootstrap: str) -> AsyncIterator[RecoveringProducer]:
    """The producer as ``consumers.runner`` makes it."""
    make = partial(producer_for, KafkaConnection(bootstrap=bootstrap), "test", LIMIT)
    async with RecoveringProducer(
        make, name="dead-letter producer", close_timeout=SEND_TIMEOUT_S
    ) as producer:
        yield producer


def letter(offset: int, value: bytes | None = None) -> Letter:
    value = value if value is not None else b"not json %d" % offset
    return Letter(value, b"key", [], None, "k8s-audit", 0, offset, "not JSON")


async def test_a_letter_the_broker_refuses_goes_again_cut_and_every_other_is_acknowledged(
    kafka_bootstrap: str,
) -> None:
    """One partition: the broker refuses the batch of the large letter, then answers
    OUT_OF_ORDER_SEQUENCE_NUMBER to the batches after it on that producer. Those go out again
    on a new producer; the large one is sent again cut to its headers."""
    topic = unique_topic("dead-letters")
    await create_topic(kafka_bootstrap, topic, config={"max.message.bytes": "4000"})
    large = base64.b64encode(os.urandom(6000))  # over the limit once zstd has had it too
    letters = [letter(i, large if i == 30 else None) for i in range(61)]
    async with dead_letter_producer(kafka_bootstrap) as producer:
        await send_letters(producer, topic, letters, LIMIT)
        await send_letters(producer, topic, [letter(61)], LIMIT)  # a working producer after
        assert producer.replacements >= 1
    delivered = await read_topic(kafka_bootstrap, topic, 62, contract=False)
    expected = [b"not json %d" % i for i in range(62) if i != 30]
    assert sorted(m.value for m in delivered) == sorted([*expected, b""])
    [cut] = [m for m in delivered if m.value == b""]
    assert dict(cut.headers)["truncated-from-bytes"] == b"8000"


async def test_a_broker_restart_while_letters_are_in_flight_loses_none(
    broker_factory: Callable[[], LocalBroker],
) -> None:
    """The broker stops (controlled shutdown) and starts while batches of letters are sent; a
    batch that fails is sent again, as ``Retrier.retry`` does. Every letter arrives."""
    broker = broker_factory()
    topic = unique_topic("dead-letters")
    await create_topic(broker.bootstrap, topic, 3)
    letters = [letter(i) for i in range(5000)]

    async def deliver(producer: RecoveringProducer) -> None:
        for start in range(0, len(letters), 100):
            while True:
                try:
                    await send_letters(producer, topic, letters[start : start + 100], LIMIT)
                    break
                except KafkaUnavailable:
                    await asyncio.sleep(0.2)

    async with dead_letter_producer(broker.bootstrap) as producer:
        delivering = asyncio.create_task(deliver(producer))
        await asyncio.sleep(0.3)  # some batches acknowledged, others in flight
        await asyncio.to_thread(broker.stop)
        assert not delivering.done()  # the broker went away in the middle of the delivery
        await asyncio.to_thread(broker.start)
        await asyncio.wait_for(delivering, timeout=180)
    delivered = await read_topic(broker.bootstrap, topic, len(letters), timeout=60, contract=False)
    assert {m.value for m in delivered} == {lt.value for lt in letters}
