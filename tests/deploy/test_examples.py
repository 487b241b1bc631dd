"""deploy/examples/consume_topic.py, the README's example consumer, against a real relay's topic."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import pytest

from audit_common.samples import sample_events
from tests.support.events import event_list
from tests.support.kafka import REPO, read_topic
from tests.support.relay import StartRelay

pytestmark = pytest.mark.integration
EVENTS = 30


async def test_the_example_consumer_prints_each_event_once_though_it_was_sent_twice(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    body = event_list(sample_events(EVENTS, cluster="staging"))
    for _ in range(2):  # the apiserver re-sends a batch whose 200 it did not get in time
        async with http.post(relay.url, data=body) as response:
            assert response.status == 200
    await read_topic(relay.bootstrap, relay.topic, 2 * EVENTS)
    example = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "deploy" / "examples" / "consume_topic.py"),
        *("--bootstrap", relay.bootstrap, "--topic", relay.topic, "--max", str(EVENTS)),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(example.communicate(), timeout=60)
    assert example.returncode == 0
    lines = stdout.decode().splitlines()
    assert len(lines) == EVENTS == len(set(lines))
    assert all(line.split()[1] == "default" for line in lines), lines[:3]
