"""Peak RSS of a relay worker for bodies of many small items, against normal bodies the same size.

    python bench/hostile_memory.py                      # this checkout
    python bench/hostile_memory.py --baseline ../old    # then another checkout, same run

A private broker (deploy/local/kafka) and, for each body, a fresh relay (one worker, default
flags but ``--log-level WARNING``), so that each peak is that body's alone. Each body is posted
once; printed per body: the answer, the seconds it took, the worker's RSS before it and its peak
(``VmHWM``) after it, in MB, and the peak over that of the normal body of the same size, measured
in the same run:

- ``normal-2MB``: sample events (``audit_common.samples``), about 1.9 MB;
- ``tiny-1M``: 1,000,000 one-byte items (``1``), 1.9 MB, as in issue 22;
- ``normal-64MiB``: sample events, just under the 64 MiB ``--max-body-bytes``;
- ``small-64MiB``: the smallest valid events (six short fields, about 190 bytes), as many as fit
  in the same size.

Writes bench/results/hostile-memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script: import the repository's packages, not the modules beside this file.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import aiohttp  # noqa: E402
import orjson  # noqa: E402

from audit_common.samples import sample_events  # noqa: E402
from bench.broker_restart import RESULTS  # noqa: E402
from bench.procs import REPO, Relay, machine, peak_rss_mb  # noqa: E402
from tests.support.kafka import LocalBroker  # noqa: E402
from tests.support.net import unused_port_pair  # noqa: E402

TINY_ITEMS = 1_000_000
LARGE_BYTES = (64 << 20) - (64 << 10)  # under --max-body-bytes, envelope included


def event_list_of(items: list[bytes]) -> bytes:
    return (
        b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[' + b",".join(items) + b"]}"
    )


def normal(size: int) -> bytes:
    """Sample events, with auditIDs of their own, up to ``size`` bytes of EventList."""
    items: list[bytes] = []
    total = 0
    seed = 0
    while True:
        seed += 1
        for event in sample_events(2000, seed=seed):
            item = orjson.dumps(event)
            if total + len(item) + 100 > size:
                return event_list_of(items)
            items.append(item)
            total += len(item) + 1


def tiny(_size: int) -> bytes:
    return event_list_of([b"1"] * TINY_ITEMS)


def small(size: int) -> bytes:
    """The smallest valid events, as many as fit in ``size`` bytes of EventList."""
    items: list[bytes] = []
    total = 0
    while total < size - 300:
        item = (
            b'{"auditID":"%08d","stage":"ResponseComplete","verb":"get","level":"Metadata",'
            b'"requestURI":"/api","stageTimestamp":"2026-12-07T10:00:00.000000Z"}' % len(items)
        )
        items.append(item)
        total += len(item) + 1
    return event_list_of(items)


# (name, body maker, size, the name of the normal body it compares with)
BODIES: list[tuple[str, Callable[[int], bytes], int, str]] = [
    ("normal-2MB", normal, 0, "normal-2MB"),
    ("tiny-1M", tiny, 0, "normal-2MB"),
    ("normal-64MiB", normal, LARGE_BYTES, "normal-64MiB"),
    ("small-64MiB", small, LARGE_BYTES, "normal-64MiB"),
]


async def post_once(relay: Relay, body: bytes) -> tuple[int, str, float]:
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=600)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(relay.url, data=body) as response,
    ):
        text = (await response.text())[:160]
        return response.status, text, time.monotonic() - started


async def measure(body: bytes, bootstrap: str, work: Path, source: Path) -> dict[str, Any]:
    relay = Relay(1, bootstrap, work, source=source)
    try:
        await relay.start()
        [worker] = relay.worker_processes()
        before = worker.memory_info().rss / 2**20
        status, answer, seconds = await post_once(relay, body)
        peak = peak_rss_mb(worker)
    finally:
        with contextlib.suppress(RuntimeError):
            await relay.stop(within=60)
    return {
        "bytes": len(body),
        "status": status,
        "answer": answer,
        "seconds": round(seconds, 2),
        "rss_mb_before": round(before, 1),
        "rss_mb_peak": round(peak, 1),
    }


async def run(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    sources = [("this", REPO)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in sources}
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as work:
        broker = LocalBroker(unused_port_pair(), Path(work) / "kafka")
        await asyncio.to_thread(broker.start)
        try:
            for body_name, make, size, against in BODIES:
                body = make(size or len(tiny(0)))
                for source_name, source in sources:
                    result = await measure(body, broker.bootstrap, Path(work), source)
                    result["body"] = body_name
                    same = [r for r in results[source_name] if r["body"] == against]
                    if same and same[0]["rss_mb_peak"]:
                        result["peak_vs_normal"] = round(
                            result["rss_mb_peak"] / same[0]["rss_mb_peak"], 2
                        )
                    results[source_name].append(result)
                    print(f"{source_name:8} {_line(result)}", flush=True)
                del body
        finally:
            await asyncio.to_thread(broker.stop)
    return results


def _line(result: dict[str, Any]) -> str:
    ratio = f", {result['peak_vs_normal']}x the normal body's" if "peak_vs_normal" in result else ""
    return (
        f"{result['body']:13} {result['bytes'] / 2**20:6.1f} MiB: {result['status']} in "
        f"{result['seconds']} s; RSS {result['rss_mb_before']} MB before, peak "
        f"{result['rss_mb_peak']} MB{ratio}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", type=Path, help="another checkout to measure the same way")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    RESULTS.mkdir(exist_ok=True)
    output = RESULTS / "hostile-memory.json"
    document = {
        "machine": machine(),
        "args": {"baseline": str(args.baseline)},
        "results": results,
    }
    output.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
