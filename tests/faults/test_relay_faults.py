"""The relay is SIGKILLed under load, with Kafka up and with Kafka down; its spool replays."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.faults.harness import Load, Relay, Tally
from tests.support.kafka import LocalBroker
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


async def test_relay_sigkill_with_broker_down_then_restart_replays_every_worker_spool(
    broker_factory: Callable[[], LocalBroker],
    processes: ProcessFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    broker = broker_factory()
    relay = Relay(processes, broker.bootstrap, tmp_path / "spool")
    await relay.start(http, "--workers", "2")
    tally = Tally("relay SIGKILL, broker down")
    load = Load(http, relay.url, tally)
    load.start()
    await asyncio.sleep(2)
    # A clean stop: the fault under test is the relay's crash (a broker crash only restarts slower).
    await asyncio.to_thread(broker.stop)
    await asyncio.sleep(6)  # acknowledged from the spools of both workers
    spooled = len(tally.acknowledged)
    relay.kill()
    assert len(list((tmp_path / "spool").glob("worker-*/*.seg"))) >= 2, "both workers spooled"
    await asyncio.to_thread(broker.start)
    # One worker now: it replays its own directory and adopts the one the other worker left.
    process = await relay.start(http, "--workers", "1")
    await asyncio.sleep(3)
    await load.finish()
    await relay.wait_drained(http)
    await tally.read_delivered(broker.bootstrap, relay.topic)
    tally.check()
    assert spooled > 0 and tally.acknowledged == tally.sent
    assert "adopted from a stopped worker" in process.stderr()
    assert list((tmp_path / "spool").glob("worker-*/*.seg")) == []
