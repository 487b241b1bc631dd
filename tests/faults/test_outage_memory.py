"""A hung Kafka without a spool: the apiserver's retries must not pile records up in memory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import pytest

from tests.faults.harness import RESULTS, Load, Relay, Tally
from tests.support.kafka import LocalBroker
from tests.support.net import wait_until
from tests.support.processes import ProcessFactory

pytestmark = pytest.mark.integration

BOUND = 256 << 10  # --max-inflight-bytes: a few of the load's batches (about 20 KB each)
OUTAGE_S = 20
# Admission counts a request's body; once answered, its records are counted instead, and they
# weigh a little more than the body (headers per record): up to this much over the bound.
RECORD_OVERHEAD = 1.25


@pytest.mark.timeout(300)
async def test_held_bytes_stay_under_the_bound_while_a_hung_kafka_is_retried_for_long(
    broker_factory: Callable[[], LocalBroker],
    processes: ProcessFactory,
    http: aiohttp.ClientSession,
) -> None:
    broker = broker_factory()
    relay = Relay(processes, broker.bootstrap, None)
    await relay.start(http, "--max-inflight-bytes", str(BOUND))
    tally = Tally(f"hung broker {OUTAGE_S} s, no spool, retrying sender")
    # Twice the fault tests' usual rate, each batch re-posted after Retry-After.
    load = Load(http, relay.url, tally, batches_per_s=20)
    load.start()
    await wait_until(lambda: len(tally.acknowledged) >= 200, timeout=30, what="200 acknowledged")
    await asyncio.to_thread(broker.pause)
    held: list[float] = []
    unanswered: list[float] = []
    until = time.monotonic() + OUTAGE_S
    while time.monotonic() < until:
        values = await relay.metrics(http)
        unanswered.append(values["relay_kafka_unanswered_bytes"])
        held.append(values["relay_request_bytes_in_flight"] + unanswered[-1])
        await asyncio.sleep(0.2)
    broker.resume()
    await relay.wait_kafka_connected(http, True, timeout=60)
    await load.finish(retry_for=60)
    await tally.read_delivered(broker.bootstrap, relay.topic)
    RESULTS.append(
        f"| {tally.scenario} | held at most {max(held):.0f} bytes of {BOUND} "
        f"({len(held)} samples), records held after their 503: up to {max(unanswered):.0f} |"
    )
    tally.check()
    assert tally.acknowledged == tally.sent
    assert max(unanswered) > 0, "no request left records behind: the scenario missed its point"
    assert max(held) <= BOUND * RECORD_OVERHEAD
