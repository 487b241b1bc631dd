"""The senders: concurrent webhook POSTs over loopback, as the apiserver's goroutines make them.

``saturate`` runs a closed loop (each sender posts its next body as soon as the last one is
answered): the relay's maximum rate. ``paced`` runs an open loop at a fixed event rate, each
request scheduled on a clock whether or not earlier ones were answered, and measures latency
from the scheduled time, so a stalled relay cannot hide its stall (coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bench.traffic import Traffic

_TIMEOUT = aiohttp.ClientTimeout(total=30)  # the apiserver's own limit


@dataclass
class LoadResult:
    """What the senders saw in the measured window (warm-up excluded)."""

    seconds: float = 0.0
    requests: int = 0
    events: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def percentile(self, fraction: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 2),
            "requests": self.requests,
            "events": self.events,
            "events_per_s": round(self.events / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(self.percentile(0.50) * 1000, 1),
            "p99_ms": round(self.percentile(0.99) * 1000, 1),
            "max_ms": round(max(self.latencies, default=float("nan")) * 1000, 1),
            "failures": dict(self.failures),
        }


class _Window:
    """Counts only what completes inside [start, end): warm-up and tail are left out."""

    def __init__(self, warmup: float, duration: float) -> None:
        now = time.perf_counter()
        self.start = now + warmup
        self.end = self.start + duration
        self.result = LoadResult(seconds=duration)

    def record(self, finished: float, latency: float, events: int, failure: str | None) -> None:
        if not self.start <= finished < self.end:
            return
        result = self.result
        if failure is not None:
            result.failures[failure] = result.failures.get(failure, 0) + 1
            return
        result.requests += 1
        result.events += events
        result.latencies.append(latency)


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytearray, events: int
) -> str | None:
    """Post one body; None when the relay acknowledged every event, else what went wrong."""
    headers = {"Content-Type": "application/json"}
    try:
        async with session.post(url, data=body, headers=headers) as response:
            answer = await response.read()
            if response.status != 200:
                return f"http {response.status}"
            if orjson.loads(answer).get("accepted") != events:
                return "short ack"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__
    return None


def _session(connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=_TIMEOUT)


async def saturate(
    url: str, traffic: Traffic, *, senders: int, warmup: float, duration: float
) -> LoadResult:
    """Closed loop: ``senders`` connections, each posting back to back."""
    window = _Window(warmup, duration)

    async def sender(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < window.end:
            body, events = traffic.next()
            started = time.perf_counter()
            failure = await _post(session, url, body, events)
            finished = time.perf_counter()
            window.record(finished, finished - started, events, failure)
            if failure is not None:
                await asyncio.sleep(0.05)

    async with _session(senders) as session:
        await asyncio.gather(*(sender(session) for _ in range(senders)))
    return window.result


async def paced(
    url: str,
    traffic: Traffic,
    *,
    events_per_s: float,
    warmup: float,
    duration: float,
    max_in_flight: int = 64,
) -> LoadResult:
    """Open loop at ``events_per_s``; a request that finds ``max_in_flight`` busy is a failure."""
    window = _Window(warmup, duration)
    _, batch = traffic.next()
    interval = batch / events_per_s
    in_flight: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, scheduled: float) -> None:
        body, events = traffic.next()
        failure = await _post(session, url, body, events)
        finished = time.perf_counter()
        window.record(finished, finished - scheduled, events, failure)

    async with _session(max_in_flight) as session:
        scheduled = time.perf_counter()
        while scheduled < window.end:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= max_in_flight:
                window.record(scheduled, 0.0, batch, "sender backlog")
            else:
                task = asyncio.create_task(one(session, scheduled))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            scheduled += interval
        await asyncio.gather(*in_flight)
    return window.result
