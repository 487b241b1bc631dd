"""deploy/examples/consume_topic.py, the README's example consumer, against a real relay's topic."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import orjson
import pytest

from audit_common.samples import sample_events
from tests.support.corpus import event_list
from tests.support.kafka import REPO, committed_and_end, read_topic
from tests.support.relay import StartRelay

pytestmark = pytest.mark.integration
EVENTS = 30


async def run_example(bootstrap: str, topic: str, *flags: str) -> list[str]:
    """Run consume_topic.py to its end; the lines it printed."""
    example = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "deploy" / "examples" / "consume_topic.py"),
        *("--bootstrap", bootstrap, "--topic", topic, *flags),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(example.communicate(), timeout=60)
    assert example.returncode == 0
    return stdout.decode().splitlines()


async def test_the_example_consumer_prints_each_event_once_though_it_was_sent_twice(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    body = event_list(sample_events(EVENTS, cluster="staging"))
    for _ in range(2):  # the apiserver re-sends a batch whose 200 it did not get in time
        async with http.post(relay.url, data=body) as response:
            assert response.status == 200
    await read_topic(relay.bootstrap, relay.topic, 2 * EVENTS)
    lines = await run_example(relay.bootstrap, relay.topic, "--max", str(EVENTS))
    assert len(lines) == EVENTS == len(set(lines))
    assert all(line.split()[1] == "default" for line in lines), lines[:3]


async def test_max_prints_and_commits_that_many_and_the_next_run_goes_on(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()  # 3 partitions
    items = sample_events(2 * EVENTS, cluster="staging", seed=27)
    body = orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items})
    async with http.post(relay.url, data=body) as response:
        assert response.status == 200
    await read_topic(relay.bootstrap, relay.topic, 2 * EVENTS)

    first = await run_example(relay.bootstrap, relay.topic, "--group", "example-max", "--max", "7")
    assert len(first) == 7
    committed, end = await committed_and_end(relay.bootstrap, "example-max", relay.topic, 3)
    assert (committed, end) == (7, 2 * EVENTS)
    rest = await run_example(
        relay.bootstrap, relay.topic, "--group", "example-max", "--max", str(2 * EVENTS - 7)
    )
    assert len(rest) == 2 * EVENTS - 7
    assert len(set(first + rest)) == 2 * EVENTS  # nothing printed twice, nothing skipped
    committed, end = await committed_and_end(relay.bootstrap, "example-max", relay.topic, 3)
    assert committed == end == 2 * EVENTS
