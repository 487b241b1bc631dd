"""SIGTERM while Kafka is down: the relay exits within its bound, and its exit status says where
every event it took is: on the spool (3), or never acknowledged (4); 0 once all is in Kafka."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from relay import exit_status
from tests.faults.harness import RESULTS, Load, Relay, Tally
from tests.support.kafka import LocalBroker
from tests.support.net import wait_until
from tests.support.processes import ProcessFactory, wait_for_exit_or_fail

pytestmark = pytest.mark.integration

GRACE_S = 5
ACK_TIMEOUT_S = 3  # harness.Relay's --ack-timeout
# What the relay promises (--shutdown-grace + --ack-timeout + 5 s), and the interpreter's exit.
STOP_BOUND_S = GRACE_S + ACK_TIMEOUT_S + 5 + 3


@pytest.mark.parametrize(
    ("spool", "workers", "fault"),
    [
        (False, 1, "stop"),
        (True, 2, "stop"),
        (False, 2, "pause"),
    ],
    ids=["no-spool", "spool-2-workers", "no-spool-2-workers-hung"],
)
async def test_sigterm_with_kafka_down_exits_in_time_and_loses_nothing_acknowledged(
    broker_factory: Callable[[], LocalBroker],
    processes: ProcessFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    spool: bool,
    workers: int,
    fault: str,
) -> None:
    """``stop``: the broker shut down (deploy/local/kafka stop); ``pause``: a hung broker that
    keeps its connections open (SIGSTOP)."""
    broker = broker_factory()
    relay = Relay(processes, broker.bootstrap, tmp_path / "spool" if spool else None)
    process = await relay.start(http, "--workers", str(workers), "--shutdown-grace", str(GRACE_S))
    name = f"SIGTERM, broker {fault}, {'spool' if spool else 'no spool'}, {workers}w"
    tally = Tally(name)
    load = Load(http, relay.url, tally)
    load.start()
    await wait_until(lambda: len(tally.acknowledged) >= 200, timeout=30, what="200 acknowledged")
    await asyncio.to_thread(broker.stop if fault == "stop" else broker.pause)
    acknowledged_by_kafka = len(tally.acknowledged)

    async def not_delivering() -> bool:
        """Every worker gave its producer up, and requests came after: spooled or refused."""
        values = await relay.metrics(http)
        if values["relay_kafka_connected"] != 0:
            return False
        if spool:
            spooled = len(tally.acknowledged) > acknowledged_by_kafka + 100
            return spooled and values["relay_spool_events"] > 100
        return tally.answers["503"] > 0

    await wait_until(not_delivering, timeout=30, interval=0.2, what="the relay sees Kafka gone")
    acknowledged_before_stop = len(tally.acknowledged)
    started = time.monotonic()
    status = await asyncio.to_thread(wait_for_exit_or_fail, process, signal.SIGTERM, STOP_BOUND_S)
    stop_seconds = time.monotonic() - started
    await load.finish(retry_for=0)
    assert status == (exit_status.SPOOLED if spool else exit_status.KAFKA_UNAVAILABLE), (
        f"exit status {status}:\n{process.stderr()[-3000:]}"
    )
    assert len(tally.acknowledged) >= acknowledged_before_stop
    if fault == "pause":
        broker.resume()
    else:
        await asyncio.to_thread(broker.start)
    if spool:
        # The replacement on the same volume delivers what the stopped relay kept (its spool
        # metrics count another worker's directory only once a replay pass adopted it).
        replacement = await relay.start(http)

        async def all_delivered() -> bool:
            await tally.read_delivered(broker.bootstrap, relay.topic)
            return tally.acknowledged <= tally.delivered.keys()

        await wait_until(all_delivered, timeout=60, interval=1, what="the spool replayed")
        await relay.wait_drained(http)
        code = await asyncio.to_thread(wait_for_exit_or_fail, replacement, signal.SIGTERM, 30)
        assert code == exit_status.DELIVERED, replacement.stderr()[-3000:]
    await tally.read_delivered(broker.bootstrap, relay.topic)
    RESULTS.append(f"| {name} | stopped in {stop_seconds:.1f} s, exit status {status} |")
    tally.check()
    assert stop_seconds < STOP_BOUND_S
