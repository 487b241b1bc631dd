"""How long small requests wait while a worker takes in 60 MB bodies (issue 17, item 4).

    python bench/loop_latency.py                             # this checkout
    python bench/loop_latency.py --baseline /tmp/old-clone   # and another checkout, same run

For each checkout: a private broker (deploy/local/kafka, or ``--bootstrap``), a relay of one
worker (``--max-body-bytes`` raised for the large bodies), small EventLists of three events
(bench/traffic.py's mix of the sample events) posted at a steady ``--rate``, and as many GETs of
/healthz. Each is sent on a clock whether or not earlier ones were answered, and its latency
taken from the time it was due (bench/load.py's ``paced``). A small POST waits for Kafka's ack
as well; /healthz only for the worker's event loop. Two phases: the small requests alone, then
with an EventList of about ``--large-mb`` MB posted every ``--large-every`` seconds by another
process (so that sending it costs this one nothing). Printed per checkout and phase: p50, p99
and max latency; then, over ``--rounds`` (the checkouts taking turns, as a shared machine's
load drifts), the medians, and the baseline's p99 with large bodies over this checkout's.
Writes bench/results/loop-latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# Run as a script: import the repository's packages, not the modules beside this file.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import aiohttp  # noqa: E402
import orjson  # noqa: E402

from bench.load import LoadResult, paced  # noqa: E402
from bench.procs import REPO, Relay, machine  # noqa: E402
from bench.traffic import Traffic  # noqa: E402
from tests.support.kafka import LocalBroker  # noqa: E402
from tests.support.net import unused_port_pair  # noqa: E402

RESULTS = REPO / "bench" / "results"
SMALL_BATCH = 3
# RequestResponse events of the sample traffic weigh 30 KB on average.
MEAN_LARGE_EVENT_BYTES = 30_000
PHASES = ("alone", "with_large_bodies")


def _large_sender(conn: Connection, events: int) -> None:
    """A process posting large bodies on command: one (url, every, seconds) per phase."""
    traffic = Traffic.build(events, templates=1, mix=(("RequestResponse", 1.0),))
    conn.send(len(traffic.templates[0].body))
    while (command := conn.recv()) is not None:
        url, every, seconds = command
        conn.send(asyncio.run(_post_large(url, traffic, every, seconds)))


async def _post_large(url: str, traffic: Traffic, every: float, seconds: float) -> dict[str, Any]:
    """Post a large body every ``every`` seconds (one at a time) for ``seconds``."""
    latencies: list[float] = []
    failures: list[str] = []
    end = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        due = time.monotonic() + every / 2
        while due < end:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            body, count = traffic.next()
            started = time.monotonic()
            try:
                async with session.post(url, data=body) as response:
                    answer = await response.read()
                    if response.status != 200 or orjson.loads(answer)["accepted"] != count:
                        failures.append(f"http {response.status}")
                    else:
                        latencies.append(time.monotonic() - started)
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures.append(type(exc).__name__)
            due = max(due + every, time.monotonic())
    return {
        "bodies": len(latencies),
        "mean_s": round(sum(latencies) / len(latencies), 2) if latencies else None,
        "failures": failures,
    }


class LargeSender:
    """The process that posts large bodies; it builds one body first (seconds)."""

    def __init__(self, megabytes: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        events = int(megabytes * 1_000_000 / MEAN_LARGE_EVENT_BYTES)
        self._process = context.Process(target=_large_sender, args=(child, events), daemon=True)
        self.body_bytes = 0

    async def start(self) -> None:
        self._process.start()
        self.body_bytes = await asyncio.to_thread(self._conn.recv)

    async def post(self, url: str, every: float, seconds: float) -> dict[str, Any]:
        self._conn.send((url, every, seconds))
        result: dict[str, Any] = await asyncio.to_thread(self._conn.recv)
        return result

    async def stop(self) -> None:
        if self._process.is_alive():
            self._conn.send(None)
            await asyncio.to_thread(self._process.join, 30)


@contextlib.asynccontextmanager
async def kafka(given: str | None, work: Path) -> AsyncIterator[str]:
    """``--bootstrap``'s broker, or one started here and stopped at the end."""
    if given:
        yield given
        return
    broker = LocalBroker(unused_port_pair(), work / "kafka")
    print(f"starting a broker on {broker.bootstrap}", flush=True)
    await asyncio.to_thread(broker.start)
    try:
        yield broker.bootstrap
    finally:
        await asyncio.to_thread(broker.stop)


async def probe_health(base: str, rate: float, warmup: float, duration: float) -> LoadResult:
    """GET /healthz at ``rate`` on a clock: what only the event loop (no Kafka) answers."""
    result = LoadResult(seconds=duration)
    start = time.perf_counter() + warmup
    end = start + duration
    tasks: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, due: float) -> None:
        try:
            async with session.get(f"{base}/healthz") as response:
                await response.read()
                failure = None if response.status == 200 else f"http {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = type(exc).__name__
        if due >= start:
            if failure is None:
                result.requests += 1
                result.latencies.append(time.perf_counter() - due)
            else:
                result.failures[failure] = result.failures.get(failure, 0) + 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        due = time.perf_counter()
        while due < end:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            task = asyncio.create_task(one(session, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            due += 1 / rate
        await asyncio.gather(*tasks)
    return result


async def measure(
    args: argparse.Namespace,
    name: str,
    source: Path,
    bootstrap: str,
    work: Path,
    small: Traffic,
    large: LargeSender,
) -> dict[str, Any]:
    max_body = str(int(large.body_bytes * 1.5))
    relay = Relay(1, bootstrap, work, ("--max-body-bytes", max_body), source=source)
    base = f"http://127.0.0.1:{relay.port}"
    await relay.start()
    result: dict[str, Any] = {"checkout": name, "source": str(source)}
    try:
        for phase in PHASES:
            loads = [
                paced(
                    relay.url,
                    small,
                    events_per_s=args.rate * SMALL_BATCH,
                    warmup=args.warmup,
                    duration=args.seconds,
                ),
                probe_health(base, args.rate, args.warmup, args.seconds),
            ]
            if phase == "with_large_bodies":
                loads.append(large.post(relay.url, args.large_every, args.warmup + args.seconds))
            posts, health, *bodies = await asyncio.gather(*loads)
            result[f"small_{phase}"] = posts.summary()
            result[f"healthz_{phase}"] = health.summary()
            for what in ("small", "healthz"):
                summary = result[f"{what}_{phase}"]
                print(f"  {name}, {what} {phase.replace('_', ' ')}: {_line(summary)}", flush=True)
            if bodies:
                result["large_bodies"] = bodies[0]
                print(f"  {name}, large bodies: {bodies[0]}", flush=True)
    finally:
        await relay.stop()
    return result


def _line(summary: dict[str, Any]) -> str:
    return (
        f"p50 {summary['p50_ms']} ms  p99 {summary['p99_ms']} ms  max {summary['max_ms']} ms  "
        f"({summary['requests']} requests, failures {summary['failures'] or 'none'})"
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sources = [("this checkout", REPO)]
    if args.baseline:
        sources.append(("baseline", args.baseline.resolve()))
    small = Traffic.build(SMALL_BATCH, templates=16)
    large = LargeSender(args.large_mb)
    started = time.monotonic()
    results: dict[str, Any] = {"machine": machine(), "args": _args(args)}
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        work = Path(tmp)
        await large.start()
        print(f"large bodies of {large.body_bytes / 1e6:.1f} MB", flush=True)
        results["large_body_bytes"] = large.body_bytes
        try:
            async with kafka(args.bootstrap, work) as bootstrap:
                runs = results["runs"] = []
                for round_ in range(args.rounds):
                    print(f"round {round_ + 1} of {args.rounds}", flush=True)
                    for name, source in sources:
                        runs.append(
                            await measure(args, name, source, bootstrap, work, small, large)
                        )
        finally:
            await large.stop()
    summary = results["summary"] = _summary(runs)
    for name, figures in summary.items():
        print(f"{name}, median over rounds: {figures}")
    if len(summary) == 2:
        ours, baseline = summary.values()
        for key in ("small_p99_ms_with_large_bodies", "healthz_p99_ms_with_large_bodies"):
            results[f"baseline_over_this_{key}"] = round(baseline[key] / ours[key], 2)
            print(f"{key}: baseline {baseline[key]} / this checkout {ours[key]}")
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def _summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per checkout, the median over rounds of each latency figure."""
    summary: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(run["checkout"] for run in runs):
        mine = [run for run in runs if run["checkout"] == name]
        summary[name] = {
            f"{what}_{figure}_{phase}": round(
                statistics.median(run[f"{what}_{phase}"][figure] for run in mine), 1
            )
            for what in ("small", "healthz")
            for phase in PHASES
            for figure in ("p50_ms", "p99_ms", "max_ms")
        }
    return summary


def _args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", type=Path, help="another checkout, measured in the same run")
    parser.add_argument("--bootstrap", help="a running broker (default: start a private one)")
    parser.add_argument("--rate", type=float, default=40, help="small requests per second (40)")
    parser.add_argument("--large-mb", type=float, default=60, help="large body size, MB (60)")
    parser.add_argument(
        "--large-every", type=float, default=4, help="seconds between large bodies (4)"
    )
    parser.add_argument("--seconds", type=float, default=30, help="measured seconds per phase")
    parser.add_argument("--rounds", type=int, default=1, help="turns of each checkout (1)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds before measuring (3)")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    RESULTS.mkdir(exist_ok=True)
    text = orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n"
    (RESULTS / "loop-latency.json").write_bytes(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
