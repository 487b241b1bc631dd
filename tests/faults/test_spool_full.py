"""A full spool: 503 with Retry-After, and nothing acknowledged that was not stored."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.faults.harness import Load, Relay, Tally
from tests.support.events import audit_events, event_list
from tests.support.kafka import LocalBroker
from tests.support.net import wait_until
from tests.support.processes import ProcessFactory

pytestmark = pytest.mark.integration

SPOOL_MAX_BYTES = 400_000
BATCH_BYTES = 100_000


def batch_of(size: int) -> bytes:
    """An EventList of at least ``size`` bytes whose events the load never sends."""
    items: list[dict[str, Any]] = []
    for index, event in enumerate(itertools.cycle(audit_events())):
        items.append({**event, "auditID": f"refused-{index}"})
        if len(body := event_list(items)) >= size:
            return body
    raise AssertionError("unreachable")


async def test_full_spool_answers_503_and_acknowledges_only_what_it_stored(
    broker_factory: Callable[[], LocalBroker],
    processes: ProcessFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    broker = broker_factory()
    broker.stop()  # the relay never reaches Kafka before the spool is full
    relay = Relay(processes, broker.bootstrap, tmp_path / "spool")
    await relay.start(http, "--spool-max-bytes", str(SPOOL_MAX_BYTES))
    tally = Tally("spool full (400 kB), no retries")
    load = Load(http, relay.url, tally, retry=False)
    load.start()
    await wait_until(lambda: tally.answers["503"] >= 10, timeout=30, what="503 from a full spool")
    await load.finish()
    metrics = await relay.metrics(http)
    assert SPOOL_MAX_BYTES - BATCH_BYTES < metrics["relay_spool_bytes"] <= SPOOL_MAX_BYTES
    assert metrics["relay_spool_events"] == len(tally.acknowledged)
    async with http.post(relay.url, data=batch_of(BATCH_BYTES)) as response:
        assert response.status == 503
        assert response.headers["Retry-After"].isdigit()
        assert "spool full" in (await response.json())["error"]

    await asyncio.to_thread(broker.start)
    await relay.wait_drained(http)
    await tally.read_delivered(broker.bootstrap, relay.topic)
    tally.check()
    assert tally.answers.keys() == {"200", "503"}
    # Refused batches were refused whole: exactly what was acknowledged reached Kafka.
    assert tally.delivered.keys() == tally.acknowledged
