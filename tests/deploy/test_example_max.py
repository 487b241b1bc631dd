"""``consume_topic.py --max N`` prints N events and commits no further: the next run of the
group prints the next ones (it printed and committed a whole topic before)."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import orjson
import pytest

from audit_common.samples import sample_events
from tests.support.kafka import REPO, committed_and_end, read_topic
from tests.support.relay import StartRelay

pytestmark = pytest.mark.integration
EVENTS = 60


async def run_example(bootstrap: str, topic: str, count: int) -> list[str]:
    example = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "deploy" / "examples" / "consume_topic.py"),
        *("--bootstrap", bootstrap, "--topic", topic, "--group", "example-max"),
        *("--max", str(count)),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(example.communicate(), timeout=60)
    assert example.returncode == 0
    return stdout.decode().splitlines()


async def test_max_prints_and_commits_that_many(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()  # 3 partitions
    items = sample_events(EVENTS, cluster="staging", seed=27)
    body = orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items})
    async with http.post(relay.url, data=body) as response:
        assert response.status == 200
    await read_topic(relay.bootstrap, relay.topic, EVENTS)

    first = await run_example(relay.bootstrap, relay.topic, 7)
    assert len(first) == 7
    committed, end = await committed_and_end(relay.bootstrap, "example-max", relay.topic, 3)
    assert (committed, end) == (7, EVENTS)
    rest = await run_example(relay.bootstrap, relay.topic, EVENTS - 7)
    assert len(rest) == EVENTS - 7
    assert len(set(first + rest)) == EVENTS  # nothing printed twice, nothing skipped
    assert await committed_and_end(relay.bootstrap, "example-max", relay.topic, 3) == (
        EVENTS,
        EVENTS,
    )
