"""The stall probe against a real broker, its answers made slow on purpose: one slow answer is
not a dead broker, ``misses`` in a row are."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaClient

from audit_common.kafka_connection import KafkaConnection
from relay.kafka.stall_probe import StallProbe
from tests.support.net import unused_port

pytestmark = pytest.mark.integration


class SlowAnswers:
    """Asks for the cluster's metadata; the first ``slow`` answers come after 2 s."""

    def __init__(self, slow: int) -> None:
        self.slow = slow
        self.calls = 0

    async def __call__(self, client: AIOKafkaClient) -> object:
        self.calls += 1
        if self.calls <= self.slow:
            await asyncio.sleep(2)
        return await client.fetch_all_metadata()


def probe(bootstrap: str, ask: SlowAnswers | None = None) -> StallProbe:
    connection = KafkaConnection(bootstrap=bootstrap)
    return StallProbe(connection, timeout=0.3, misses=3, interval=0.0, ask=ask)


async def test_one_slow_answer_is_not_a_dead_broker(kafka_bootstrap: str) -> None:
    ask = SlowAnswers(slow=1)
    async with probe(kafka_bootstrap, ask) as stall_probe:
        assert await stall_probe.unreachable() is None
    assert ask.calls == 2


async def test_misses_in_a_row_make_kafka_unreachable(kafka_bootstrap: str) -> None:
    ask = SlowAnswers(slow=3)
    async with probe(kafka_bootstrap, ask) as stall_probe:
        reason = await stall_probe.unreachable()
        assert reason is not None and reason.startswith("no broker answered 3 probes in a row")
        assert await stall_probe.unreachable() is None  # answered again: reachable
    assert ask.calls == 4


async def test_concurrent_callers_share_one_round(kafka_bootstrap: str) -> None:
    ask = SlowAnswers(slow=0)
    async with probe(kafka_bootstrap, ask) as stall_probe:
        answers = await asyncio.gather(*(stall_probe.unreachable() for _ in range(50)))
    assert answers == [None] * 50
    assert ask.calls == 1


async def test_no_broker_at_the_address_is_unreachable() -> None:
    async with probe(f"127.0.0.1:{unused_port()}") as stall_probe:
        reason = await stall_probe.unreachable()
    assert reason is not None and "3 probes" in reason
