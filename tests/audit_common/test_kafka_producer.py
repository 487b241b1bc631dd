"""``RecoveringProducer`` against a real broker: what its three users (the relay's publisher, the
dead-letter and alerts producers, tested each in its own package) rely on."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest

from audit_common.errors import KafkaUnavailable
from audit_common.kafka_connection import KafkaConnection
from audit_common.kafka_producer import KafkaRecord, RecoveringProducer
from consumers.producers import producer_for
from tests.support.kafka import create_topic, read_topic, unique_topic
from tests.support.net import unused_port

pytestmark = pytest.mark.integration


def recovering(bootstrap: str) -> RecoveringProducer:
    make = partial(producer_for, KafkaConnection(bootstrap=bootstrap), "test", 1 << 20)
    return RecoveringProducer(make, name="test producer", close_timeout=10)


async def test_a_producer_whose_sender_died_is_replaced_and_nothing_is_lost(
    kafka_bootstrap: str,
) -> None:
    topic = unique_topic("sender")
    await create_topic(kafka_bootstrap, topic)
    records = [KafkaRecord(topic, b"%d" % i, b"k") for i in range(20)]
    async with recovering(kafka_bootstrap) as producer:
        assert await producer.send_all(records[:10], 30) == [None] * 10
        first = await producer.wait()
        # What a crash of aiokafka's sender task leaves: every later send() raises.
        first.producer._sender.sender_task.cancel()
        await asyncio.sleep(0)
        assert await producer.send_all(records[10:], 30) == [None] * 10
        assert (await producer.wait()) is not first
        assert producer.replacements == 1
    delivered = await read_topic(kafka_bootstrap, topic, 20, contract=False)
    assert sorted(m.value for m in delivered) == sorted(r.value for r in records)


async def test_kafka_out_of_reach_is_said_at_once_not_waited_for() -> None:
    async with recovering(f"127.0.0.1:{unused_port()}") as producer:
        # Waits for the first connect attempt only: once it failed, the answer comes at once.
        with pytest.raises(KafkaUnavailable, match="not connected"):
            await producer.send_all([KafkaRecord("t", b"v")], 60)


async def test_not_started_is_not_connected() -> None:
    with pytest.raises(KafkaUnavailable, match="not connected"):
        await recovering("127.0.0.1:9").wait()
