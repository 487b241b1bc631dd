"""The relay is SIGKILLed under load, with Kafka up and with Kafka down; its spool replays."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.faults.harness import Load, Relay, Tally
from tests.support.kafka import LocalBroker
from tests.support.net import wait_until
from tests.support.processes import ProcessFactory

pytestmark = pytest.mark.integration


async def test_relay_sigkill_with_broker_up_then_restart(
    broker_factory: Callable[[], LocalBroker],
    processes: ProcessFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    broker = broker_factory()
    relay = Relay(processes, broker.bootstrap, tmp_path / "spool")
    await relay.start(http)
    tally = Tally("relay SIGKILL, broker up")
    load = Load(http, relay.url, tally)
    load.start()
    await asyncio.sleep(4)
    relay.kill()
    await relay.start(http)  # the load retries what went unanswered, as the apiserver does
    await asyncio.sleep(4)
    await load.finish()
    await relay.wait_drained(http)
    await tally.read_delivered(broker.bootstrap, relay.topic)
    tally.check()
    assert tally.acknowledged == tally.sent


@pytest.mark.parametrize(
    ("before", "after"), [(2, 1), (1, 2)], ids=["2-workers-then-1", "1-worker-then-2"]
)
async def test_relay_sigkill_with_broker_down_then_restart_with_other_workers_replays_every_spool(
    broker_factory: Callable[[], LocalBroker],
    processes: ProcessFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    before: int,
    after: int,
) -> None:
    """What a replacement pod does with its predecessor's volume when --workers changed."""
    broker = broker_factory()
    spool = tmp_path / "spool"
    relay = Relay(processes, broker.bootstrap, spool)
    await relay.start(http, "--workers", str(before))
    tally = Tally(f"relay SIGKILL, broker down, {before}w then {after}w")
    # A connection per request: the kernel spreads connections, not requests, over the workers.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=http.timeout) as spread:
        load = Load(spread, relay.url, tally)
        load.start()
        await wait_until(lambda: len(tally.acknowledged) > 0, timeout=30, what="a first 200")
        # A clean stop: the fault under test is the relay's crash.
        await asyncio.to_thread(broker.stop)
        outage_starts = len(tally.acknowledged)

        def every_worker_spooled() -> bool:
            directories = {path.parent for path in spool.glob("worker-*/*.seg")}
            return len(directories) == before and len(tally.acknowledged) > outage_starts + 400

        await wait_until(every_worker_spooled, timeout=60, what=f"{before} workers spooling")
        spooled = (await relay.metrics(http))["relay_spool_events"]
        relay.kill()
        # The replacement starts while Kafka is still down, as a pod rescheduled in an outage.
        process = await relay.start(http, "--workers", str(after))
        restarted = len(tally.acknowledged)
        await wait_until(lambda: len(tally.acknowledged) > restarted + 100, timeout=30, what="200s")
        await asyncio.to_thread(broker.start)
        await load.finish()
    await relay.wait_drained(http)
    await tally.read_delivered(broker.bootstrap, relay.topic)
    tally.check()
    assert tally.acknowledged == tally.sent
    # Every event on the dead relay's disk was found again by the new one, whose workers claim
    # the directories by number and adopt those no worker claimed.
    stderr = process.stderr()
    recovered = sum(int(n) for n in re.findall(r"recovered \d+ segments with (\d+) events", stderr))
    assert recovered >= spooled > 0, stderr[-3000:]
    assert ("adopted from a stopped worker" in stderr) == (after < before), stderr[-3000:]
    assert list(spool.glob("worker-*/*.seg")) == []
