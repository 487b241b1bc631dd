"""Restart the broker the way clusters do, under load, and measure how the relay comes back.

    python bench/broker_restart.py                       # this checkout, with and without a spool
    python bench/broker_restart.py --baseline ../old     # the same, then another checkout, same run

For each relay configuration: a private broker (deploy/local/kafka), the relay, and two senders
posting one-event EventLists every 20 ms (re-posting what was not answered 200 after its
``Retry-After``, as kube-apiserver's client does). The broker is stopped with
``deploy/local/kafka stop`` (a controlled shutdown: SIGTERM), left down ``--down`` seconds, and
started again, ``--restarts`` times in a row. Printed per configuration: for each restart the
seconds from the broker being ready to the relay delivering again (the first 200 without a
spool; the spool drained with one), or "never" within ``--recover-within``; the relay's
CPU-seconds per minute while the broker was down; and, read back from the topic at the end,
acknowledged events missing (must be 0) and duplicates.
Writes bench/results/broker-restart.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script: import the repository's packages, not the modules beside this file.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import aiohttp  # noqa: E402
import orjson  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bench.procs import REPO, Relay  # noqa: E402
from tests.support.kafka import LocalBroker, read_topic, topic_size  # noqa: E402
from tests.support.net import unused_port_pair  # noqa: E402

RESULTS = REPO / "bench" / "results"
SENDERS = 2
SEND_INTERVAL_S = 0.02


def _event(audit_id: str) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    return {
        "level": "Metadata",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/default/pods?limit=500",
        "verb": "list",
        "user": {
            "username": "system:serviceaccount:default:bench",
            "groups": ["system:authenticated"],
        },
        "sourceIPs": ["127.0.0.1"],
        "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": now,
        "stageTimestamp": now,
    }


@dataclass
class Senders:
    """Posts one-event EventLists until stopped; remembers what was answered 200, and when."""

    url: str
    acknowledged: set[str] = field(default_factory=set)
    last_ok: float = 0.0
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, http: aiohttp.ClientSession) -> None:
        self._tasks = [asyncio.create_task(self._send(http, n)) for n in range(SENDERS)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _send(self, http: aiohttp.ClientSession, sender: int) -> None:
        while not self._stop.is_set():
            audit_id = f"restart-{sender}-{next(self._ids):08d}"
            body = orjson.dumps(
                {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [_event(audit_id)]}
            )
            while not self._stop.is_set():  # the same event again until it is acknowledged
                retry_after = 1.0
                try:
                    async with http.post(self.url, data=body) as response:
                        status = response.status
                        retry_after = float(response.headers.get("Retry-After", retry_after))
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                if status == 200:
                    self.acknowledged.add(audit_id)
                    self.last_ok = time.monotonic()
                    break
                # As client-go does with a 503 and Retry-After; 1 s after a connection error.
                await asyncio.sleep(retry_after)
            await asyncio.sleep(SEND_INTERVAL_S)


async def _metrics(http: aiohttp.ClientSession, relay: Relay) -> dict[str, float]:
    try:
        async with http.get(f"http://127.0.0.1:{relay.port}/metrics") as response:
            text = await response.text()
    except aiohttp.ClientError:
        return {}
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _recovered(
    http: aiohttp.ClientSession, relay: Relay, senders: Senders, since: float, spool: bool
) -> bool:
    if senders.last_ok <= since:
        return False
    if not spool:
        return True
    values = await _metrics(http, relay)
    return values.get("relay_spool_events") == 0 and values.get("relay_kafka_up") == 1


def _cpu_seconds(relay: Relay) -> float:
    total = 0.0
    for process in relay.all_processes():
        times = process.cpu_times()
        total += times.user + times.system
    return total


async def scenario(
    args: argparse.Namespace, name: str, source: Path, extra: list[str]
) -> dict[str, Any]:
    spool = "--spool-dir" in extra
    with tempfile.TemporaryDirectory(prefix="bench-restart-") as work:
        broker = LocalBroker(unused_port_pair(), Path(work) / "kafka")
        await asyncio.to_thread(broker.start)
        relay = Relay(args.workers, broker.bootstrap, Path(work), tuple(extra), source=source)
        relay.extra_args = (*relay.extra_args, "--log-level", "INFO")
        try:
            await relay.start()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                senders = Senders(relay.url)
                senders.start(http)
                recoveries: list[float | None] = []
                down_cpu = down_wall = 0.0
                for _ in range(args.restarts):
                    await asyncio.sleep(args.up)
                    await asyncio.to_thread(broker.stop)
                    cpu_before, wall_before = _cpu_seconds(relay), time.monotonic()
                    await asyncio.sleep(args.down)
                    down_cpu += _cpu_seconds(relay) - cpu_before
                    down_wall += time.monotonic() - wall_before
                    await asyncio.to_thread(broker.start)
                    ready = time.monotonic()
                    recoveries.append(
                        await _wait_recovery(http, relay, senders, ready, spool, args)
                    )
                await asyncio.sleep(args.up)
                await senders.stop()
                if spool:
                    await _wait_recovery(http, relay, senders, 0, spool, args)
            size = await topic_size(broker.bootstrap, relay.topic)
            # No contract check: a baseline's relay may predate the schema-version header.
            records = await read_topic(
                broker.bootstrap, relay.topic, size, timeout=120, contract=False
            )
        finally:
            with contextlib.suppress(RuntimeError):
                await relay.stop()
            await asyncio.to_thread(broker.stop)
    delivered: dict[str, int] = {}
    for record in records:
        audit_id = orjson.loads(record.value)["auditID"]
        delivered[audit_id] = delivered.get(audit_id, 0) + 1
    return {
        "scenario": name,
        "recovery_s": [None if r is None else round(r, 1) for r in recoveries],
        "cpu_s_per_outage_minute": round(down_cpu / down_wall * 60, 1),
        "acknowledged": len(senders.acknowledged),
        "lost": len(senders.acknowledged - delivered.keys()),
        "duplicated": sum(count - 1 for count in delivered.values()),
    }


async def _wait_recovery(
    http: aiohttp.ClientSession,
    relay: Relay,
    senders: Senders,
    since: float,
    spool: bool,
    args: argparse.Namespace,
) -> float | None:
    deadline = time.monotonic() + args.recover_within
    while time.monotonic() < deadline:
        if await _recovered(http, relay, senders, since, spool):
            return time.monotonic() - since if since else 0.0
        await asyncio.sleep(0.1)
    return None


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    sources = [("", REPO)] + ([("baseline ", args.baseline.resolve())] if args.baseline else [])
    results = []
    for label, source in sources:
        for spool in (False, True):
            with tempfile.TemporaryDirectory(prefix="bench-spool-") as spool_dir:
                extra = ["--ack-timeout", "5"] + (["--spool-dir", spool_dir] if spool else [])
                name = f"{label}{args.workers} worker(s), {'spool' if spool else 'no spool'}"
                result = await scenario(args, name, source, extra)
            print(_line(result), flush=True)
            results.append(result)
    return results


def _line(result: dict[str, Any]) -> str:
    recoveries = ", ".join("never" if r is None else f"{r}" for r in result["recovery_s"])
    return (
        f"{result['scenario']}: back after [{recoveries}] s; "
        f"{result['cpu_s_per_outage_minute']} CPU-s per outage minute; "
        f"{result['acknowledged']} acknowledged, {result['lost']} lost, "
        f"{result['duplicated']} duplicated"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--restarts", type=int, default=5, help="broker restarts in a row (5)")
    parser.add_argument("--down", type=float, default=15, help="seconds the broker stays down (15)")
    parser.add_argument("--up", type=float, default=5, help="seconds of load between restarts (5)")
    parser.add_argument("--workers", type=int, default=1, help="relay --workers (1)")
    parser.add_argument(
        "--recover-within",
        type=float,
        default=90,
        help="seconds before a restart counts as never recovered (90)",
    )
    parser.add_argument(
        "--baseline", type=Path, help="another checkout of the relay, measured in the same run"
    )
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "broker-restart.json").write_text(
        orjson.dumps(results, option=orjson.OPT_INDENT_2).decode()
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
