"""A hung Kafka, no spool, apiserver-like senders retrying for minutes: the relay's memory.

    python bench/outage_memory.py                      # this checkout
    python bench/outage_memory.py --baseline ../old    # then another checkout, same run

For each relay: a private broker (deploy/local/kafka), the relay without a spool
(``--ack-timeout 5 --max-inflight-bytes 32 MiB``, one worker) and ``--senders`` senders, each
posting EventLists of about 256 KB made of the sample events and re-posting each one after the
relay's ``Retry-After`` until it is answered 200, as kube-apiserver's webhook client does. After
``--up`` seconds the broker is frozen (SIGSTOP: connections stay open and nothing answers, a
long GC pause or a partition), for ``--outage`` seconds, then thawed. Printed per relay: RSS
before the outage, its peak and its last value during it (MB), the peak of the bytes the relay
said it held (requests in flight plus records held for Kafka after their answer), answers by
status, and, read back from the topic at the end, acknowledged events missing (must be 0).
Writes bench/results/outage-memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script: import the repository's packages, not the modules beside this file.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import aiohttp  # noqa: E402
import orjson  # noqa: E402

from audit_common.samples import sample_events  # noqa: E402
from bench.broker_restart import RESULTS, _metrics  # noqa: E402
from bench.procs import REPO, Relay, machine  # noqa: E402
from tests.support.kafka import LocalBroker, read_topic, topic_size  # noqa: E402
from tests.support.net import unused_port_pair  # noqa: E402

BODY_BYTES = 256 << 10
RELAY_FLAGS = ("--ack-timeout", "5", "--max-inflight-bytes", str(32 << 20))


@dataclass
class RetryingSenders:
    """Each sender posts one body at a time until it is answered 200, waiting Retry-After."""

    url: str
    count: int
    acknowledged: set[str] = field(default_factory=set)
    answers: Counter[str] = field(default_factory=Counter)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, http: aiohttp.ClientSession, items: list[dict[str, Any]]) -> None:
        self._tasks = [asyncio.create_task(self._send(http, items)) for _ in range(self.count)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _send(self, http: aiohttp.ClientSession, items: list[dict[str, Any]]) -> None:
        while not self._stop.is_set():
            ids = [f"memory-{next(self._ids):09d}" for _ in items]
            body = orjson.dumps(
                {
                    "kind": "EventList",
                    "apiVersion": "audit.k8s.io/v1",
                    "items": [{**item, "auditID": i} for item, i in zip(items, ids, strict=True)],
                }
            )
            while not self._stop.is_set():
                retry_after = 1.0
                try:
                    async with http.post(self.url, data=body) as response:
                        status = str(response.status)
                        retry_after = float(response.headers.get("Retry-After", retry_after))
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status = type(exc).__name__
                self.answers[status] += 1
                if status == "200":
                    self.acknowledged.update(ids)
                    break
                await asyncio.sleep(retry_after)


def _body_items() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for event in sample_events(2000, seed=7):
        items.append(event)
        if len(orjson.dumps(items)) >= BODY_BYTES:
            break
    return items


def _rss_mb(relay: Relay) -> float:
    return sum(p.memory_info().rss for p in relay.all_processes()) / 1e6


async def scenario(args: argparse.Namespace, name: str, source: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as work:
        broker = LocalBroker(unused_port_pair(), Path(work) / "kafka")
        await asyncio.to_thread(broker.start)
        relay = Relay(1, broker.bootstrap, Path(work), RELAY_FLAGS, source=source)
        try:
            await relay.start()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
                senders = RetryingSenders(relay.url, args.senders)
                senders.start(http, _body_items())
                await asyncio.sleep(args.up)
                rss_before = _rss_mb(relay)
                broker.pause()
                rss: list[float] = []
                held: list[float] = []
                until = time.monotonic() + args.outage
                while time.monotonic() < until:
                    rss.append(_rss_mb(relay))
                    values = await _metrics(http, relay)
                    held.append(
                        values.get("relay_request_bytes_in_flight", 0)
                        + values.get("relay_kafka_unanswered_bytes", 0)
                    )
                    await asyncio.sleep(0.5)
                broker.resume()
                await asyncio.sleep(args.up)
                await senders.stop()
            size = await topic_size(broker.bootstrap, relay.topic)
            records = await read_topic(
                broker.bootstrap, relay.topic, size, timeout=120, contract=False
            )
        finally:
            broker.resume()
            with contextlib.suppress(RuntimeError):
                await relay.stop(within=60)
            await asyncio.to_thread(broker.stop)
    delivered = {orjson.loads(record.value)["auditID"] for record in records}
    return {
        "scenario": name,
        "rss_mb_before": round(rss_before, 1),
        "rss_mb_peak": round(max(rss), 1),
        "rss_mb_last": round(rss[-1], 1),
        "held_mb_peak": round(max(held) / 1e6, 1),
        "answers": dict(senders.answers),
        "acknowledged": len(senders.acknowledged),
        "lost": len(senders.acknowledged - delivered),
    }


def _line(result: dict[str, Any]) -> str:
    return (
        f"{result['scenario']}: RSS {result['rss_mb_before']} MB before, peak "
        f"{result['rss_mb_peak']}, last {result['rss_mb_last']}; held peak "
        f"{result['held_mb_peak']} MB; answers {result['answers']}; "
        f"{result['acknowledged']} acknowledged, {result['lost']} lost"
    )


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    sources = [("this", REPO)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    results = []
    for name, source in sources:
        result = await scenario(args, name, source)
        print(_line(result), flush=True)
        results.append(result)
    if len(results) == 2:
        this = results[0]
        growth = [r["rss_mb_peak"] - r["rss_mb_before"] for r in results]
        print(f"RSS growth in the outage: this {growth[0]:.1f} MB, baseline {growth[1]:.1f} MB")
        this["rss_growth_vs_baseline"] = round(growth[0] / growth[1], 2) if growth[1] else None
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--outage", type=float, default=120, help="seconds frozen (120)")
    parser.add_argument("--up", type=float, default=10, help="seconds of load around it (10)")
    parser.add_argument("--senders", type=int, default=16, help="concurrent senders (16)")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure the same way")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    RESULTS.mkdir(exist_ok=True)
    output = RESULTS / "outage-memory.json"
    output.write_bytes(
        orjson.dumps(
            {
                "machine": machine(),
                "args": vars(args) | {"baseline": str(args.baseline)},
                "results": results,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
