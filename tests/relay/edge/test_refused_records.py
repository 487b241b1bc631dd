"""A record the broker refuses for itself is dead-lettered; every other event of the request, of
other requests and of the spool's replay is delivered (issue 16)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.consumers.messages import with_fresh_ids
from tests.support.events import event_list
from tests.support.kafka import LocalBroker, create_topic, read_topic, unique_topic
from tests.support.net import wait_until
from tests.support.relay import StartRelay

pytestmark = pytest.mark.integration
LIMIT = 4000  # the topic's max.message.bytes


async def refusing_topic(bootstrap: str) -> str:
    """A topic whose broker refuses records over ``LIMIT`` bytes (compressed)."""
    topic = unique_topic("refusing")
    await create_topic(bootstrap, topic, 3, config={"max.message.bytes": str(LIMIT)})
    return topic


def requests() -> tuple[list[bytes], set[str], str]:
    """Three bodies of 20 events; the second's tenth carries an incompressible 6 KB object."""
    events = with_fresh_ids(60)
    large = {**events[30], "requestObject": {"blob": os.urandom(3000).hex()}}
    events[30] = large
    bodies = [event_list(events[start : start + 20]) for start in range(0, 60, 20)]
    small = {event["auditID"] for event in events} - {large["auditID"]}
    return bodies, small, large["auditID"]


async def post_all(http: aiohttp.ClientSession, url: str, bodies: list[bytes]) -> None:
    async def post(body: bytes) -> None:
        async with http.post(url, data=body) as response:
            assert response.status == 200, await response.text()

    await asyncio.gather(*(post(body) for body in bodies))


async def check_delivered(bootstrap: str, topic: str, small: set[str], large: str) -> None:
    delivered = await read_topic(bootstrap, topic, len(small))
    assert {orjson.loads(r.value)["auditID"] for r in delivered} == small
    [refused] = await read_topic(bootstrap, f"{topic}.dead-letter", 1)
    assert orjson.loads(refused.value)["auditID"] == large
    assert b"MessageSizeTooLarge" in dict(refused.headers)["reason"]


async def test_without_a_spool_one_refused_record_is_dead_lettered_and_the_rest_delivered(
    start_relay: StartRelay, http: aiohttp.ClientSession, kafka_bootstrap: str
) -> None:
    topic = await refusing_topic(kafka_bootstrap)
    relay = await start_relay("--topic", topic, "--dead-letter-topic", f"{topic}.dead-letter")
    bodies, small, large = requests()
    await post_all(http, relay.url, bodies)
    await check_delivered(kafka_bootstrap, topic, small, large)


@pytest.mark.timeout(180)
async def test_a_refused_record_in_the_spool_does_not_block_its_replay(
    start_relay: StartRelay,
    http: aiohttp.ClientSession,
    broker_factory: Callable[[], LocalBroker],
    tmp_path: Path,
) -> None:
    broker = broker_factory()
    topic = await refusing_topic(broker.bootstrap)
    relay = await start_relay(
        "--topic", topic, "--dead-letter-topic", f"{topic}.dead-letter",
        "--spool-dir", str(tmp_path / "spool"), "--ack-timeout", "3",
        bootstrap=broker.bootstrap,
    )  # fmt: skip
    await asyncio.to_thread(broker.stop)
    bodies, small, large = requests()
    await post_all(http, relay.url, bodies)  # acknowledged from the spool
    await asyncio.to_thread(broker.start)

    async def drained() -> bool:
        async with http.get(f"{relay.base}/metrics") as response:
            text = await response.text()
        return "relay_spool_events 0.0" in text and "relay_kafka_up 1.0" in text

    await wait_until(drained, timeout=90, interval=0.5, what="the spool replayed")
    await check_delivered(broker.bootstrap, topic, small, large)
