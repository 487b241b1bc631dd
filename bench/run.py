"""Benchmark the relay against Kafka's own producer on this machine (issue 8).

    python bench/run.py --quick      # < 3 minutes: 1 worker, batches of 400
    python bench/run.py              # every configuration: workers 1 and 2, batches 100 and 400
    python bench/run.py --quick --brokers 3   # then the same on a three-broker cluster, RF 3

Starts a local broker (deploy/local/kafka) unless KAFKA_BOOTSTRAP names one, then, in one run:
the relay's maximum rate and its latency at 75% of it, for each configuration; Kafka's
ProducerPerformance with the same records as the ceiling; one CSV consumer reading what the
relay wrote; a worker's peak RSS under a stream of 10 MB bodies. Writes
bench/results/latest.json (and full.json and full.png for a full run). Needs the ``bench``
extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script: import the repository's packages, not the modules beside this file.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import orjson  # noqa: E402
import psutil  # noqa: E402

from bench.ceiling import producer_performance, producer_props  # noqa: E402
from bench.cluster import compare, kafka_cluster  # noqa: E402
from bench.consumer import csv_consumer_rate  # noqa: E402
from bench.load import saturate  # noqa: E402
from bench.measure import Timing, measure_relay  # noqa: E402
from bench.procs import REPO, Relay, broker_process, machine, peak_rss_mb  # noqa: E402
from bench.traffic import Traffic, published_values  # noqa: E402
from relay.kafka.publisher import PublisherSettings  # noqa: E402
from relay.kafka.topics import min_insync_replicas  # noqa: E402
from relay.settings import build_parser  # noqa: E402
from tests.support.kafka import LocalBroker, create_topic, topic_size, unique_topic  # noqa: E402
from tests.support.net import unused_port_pair  # noqa: E402

RESULTS = REPO / "bench" / "results"
PARTITIONS = 12  # the relay's default --partitions
LARGE_BODY_BYTES = 10_000_000


def _default(name: str) -> Any:
    """A default of the relay as an operator starts it (its flag, else its publisher)."""
    flag = build_parser({}).get_default(name)
    if flag is not None:
        return flag
    return next(f.default for f in fields(PublisherSettings) if f.name == name)


@contextlib.contextmanager
def kafka(work: Path) -> Iterator[tuple[str, list[psutil.Process]]]:
    """KAFKA_BOOTSTRAP's broker, or one started here and stopped at the end."""
    given = os.environ.get("KAFKA_BOOTSTRAP")
    if given:
        yield given, []
        return
    broker = LocalBroker(unused_port_pair(), work / "kafka")
    print(f"starting a broker on {broker.bootstrap}", flush=True)
    broker.start()
    try:
        yield broker.bootstrap, broker_process(broker.state_dir)
    finally:
        broker.stop()


async def ceiling(
    bootstrap: str,
    payloads: Path,
    seconds: float,
    broker: list[psutil.Process],
    replication: int = 1,
) -> dict[str, Any]:
    topic = unique_topic("bench-ceiling")
    config = {"min.insync.replicas": str(min_insync_replicas(replication))}
    await create_topic(bootstrap, topic, PARTITIONS, config, replication_factor=replication)
    props = producer_props(bootstrap, _default("compression"), _default("linger_ms"))
    result = await producer_performance(
        bootstrap, topic, payloads, seconds=seconds, props=props, broker=broker
    )
    print(f"  ceiling {result['events_per_s']:.0f} events/s ({result['mb_per_s']} MB/s)")
    return result | {"props": {k: v for k, v in props.items() if k != "bootstrap.servers"}}


async def large_bodies(
    bootstrap: str, work: Path, seconds: float, broker: list[psutil.Process]
) -> dict[str, Any]:
    """Peak RSS of one worker receiving 10 MB bodies from 4 senders at once."""
    traffic = Traffic.build(
        LARGE_BODY_BYTES // 30_000, templates=2, mix=(("RequestResponse", 1.0),)
    )
    relay = Relay(1, bootstrap, work)
    await relay.start()
    try:
        [worker] = relay.worker_processes()
        result = await saturate(relay.url, traffic, senders=4, warmup=1.0, duration=seconds)
        rss = peak_rss_mb(worker)
    finally:
        await relay.stop()
    summary = result.summary() | {"mean_body_bytes": round(traffic.mean_body_bytes)}
    print(f"  10 MB bodies: peak RSS {rss:.0f} MiB, {summary['requests']} bodies")
    return summary | {"peak_rss_mb": round(rss, 1), "senders": 4}


async def one_pass(
    args: argparse.Namespace,
    bootstrap: str,
    broker: list[psutil.Process],
    work: Path,
    payloads: Path,
    traffics: dict[int, Traffic],
    replication: int = 1,
) -> dict[str, Any]:
    """Every configuration and the ceiling on one Kafka (the relay and the ceiling's topics with
    ``replication`` replicas); with one replica also the baseline and the CSV consumer."""
    timing = Timing(args.warmup, args.seconds, args.paced_seconds)
    relay_args = ("--replication-factor", str(replication))
    baseline = None
    if args.baseline and replication == 1:
        print(f"  baseline relay from {args.baseline}: 1 worker, batches of 400", flush=True)
        relay = Relay(1, bootstrap, work, source=args.baseline)
        await relay.start()
        try:
            baseline = await measure_relay(
                relay, traffics[400], senders=args.senders, timing=timing, broker=broker
            )
        finally:
            await relay.stop()
    configs = []
    for workers in args.workers:
        for batch in args.batches:
            print(f"  relay: {workers} worker(s), batches of {batch}", flush=True)
            relay = Relay(workers, bootstrap, work, extra_args=relay_args)
            await relay.start()
            profile = None
            if args.profile:
                profile = args.profile / f"profile-w{workers}-b{batch}.txt"
            try:
                configs.append(
                    await measure_relay(
                        relay,
                        traffics[batch],
                        senders=args.senders,
                        timing=timing,
                        broker=broker,
                        profile_to=profile,
                    )
                )
            finally:
                code = await relay.stop()
            configs[-1]["exit_code"] = code
    top = next(c for c in configs if c["workers"] == min(args.workers) and c["batch"] == 400)
    result: dict[str, Any] = {
        "ceiling": await ceiling(bootstrap, payloads, args.seconds, broker, replication),
        "configs": configs,
    }
    if not args.no_consumer and replication == 1:
        total = await topic_size(bootstrap, top["topic"])
        print(f"  csv consumer over {total} events", flush=True)
        within = args.consumer_timeout
        result["consumer"] = await csv_consumer_rate(
            bootstrap, top["topic"], total, log_dir=work, broker=broker, within=within
        )
        print(f"    {result['consumer']['events_per_s']:.0f} events/s", flush=True)
        if args.baseline:
            result["baseline_consumer"] = await csv_consumer_rate(
                bootstrap,
                top["topic"],
                total,
                log_dir=work,
                broker=broker,
                within=within,
                source=args.baseline,
            )
            rate = result["baseline_consumer"]["events_per_s"]
            print(f"    baseline csv consumer {rate:.0f} events/s", flush=True)
    result["ratio"] = round(top["max"]["events_per_s"] / result["ceiling"]["events_per_s"], 3)
    if baseline is not None:
        baseline["ratio"] = round(
            baseline["max"]["events_per_s"] / result["ceiling"]["events_per_s"], 3
        )
        result["baseline"] = baseline
    return result


def summarise(passes: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Headline figures (median over passes, each ratio taken within its own pass)."""
    last = passes[-1]
    top = next(
        c for c in last["configs"] if c["workers"] == min(args.workers) and c["batch"] == 400
    )

    def median(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    def top_of(p: dict[str, Any]) -> dict[str, Any]:
        return next(c for c in p["configs"] if c["workers"] == top["workers"] and c["batch"] == 400)

    summary = {
        "relay_events_per_s": median([top_of(p)["max"]["events_per_s"] for p in passes]),
        "ceiling_events_per_s": median([p["ceiling"]["events_per_s"] for p in passes]),
        "ratio": median([p["ratio"] for p in passes]),
        "ratios": [p["ratio"] for p in passes],
        "p99_ms": median([top_of(p)["at_75_percent"]["p99_ms"] for p in passes]),
        "p99_ms_at_max": median([top_of(p)["max"]["p99_ms"] for p in passes]),
        "headline_config": {"workers": top["workers"], "batch": 400},
    }
    if "consumer" in last:
        summary["consumer_events_per_s"] = median([p["consumer"]["events_per_s"] for p in passes])
    if "baseline_consumer" in last:
        summary["baseline_consumer_events_per_s"] = median(
            [p["baseline_consumer"]["events_per_s"] for p in passes]
        )
    if "baseline" in last:
        summary["baseline_ratio"] = median([p["baseline"]["ratio"] for p in passes])
        summary["baseline_ratios"] = [p["baseline"]["ratio"] for p in passes]
    return summary


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        traffics = {batch: Traffic.build(batch) for batch in args.batches}
        payloads = work / "payloads.txt"
        payloads.write_bytes(b"\n".join(published_values(traffics[400].templates)))
        results: dict[str, Any] = {
            "mode": "quick" if args.quick else "full",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
        }
        with kafka(work) as (bootstrap, broker):
            passes = []
            for index in range(args.repeat):
                print(f"pass {index + 1} of {args.repeat}", flush=True)
                passes.append(await one_pass(args, bootstrap, broker, work, payloads, traffics))
            results |= summarise(passes, args)
            results["configs"] = passes[-1]["configs"]
            results["ceiling"] = passes[-1]["ceiling"]
            results["consumer"] = passes[-1].get("consumer")
            results["passes"] = passes
            if not args.no_consumer:
                large = await large_bodies(bootstrap, work, args.paced_seconds, broker)
                results["large_bodies"] = large
                results["peak_rss_mb_10mb_bodies"] = large["peak_rss_mb"]
        if args.brokers > 1:
            with kafka_cluster(work, args.brokers) as (bootstrap, brokers):
                on_cluster = await one_pass(
                    args, bootstrap, brokers, work, payloads, traffics, replication=3
                )
            results["cluster"] = compare(passes[-1], on_cluster, args.brokers)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 worker, batches of 400, short")
    parser.add_argument("--repeat", type=int, default=1, help="passes; headline = median")
    parser.add_argument("--senders", type=int, default=8, help="concurrent senders")
    parser.add_argument("--profile", type=Path, help="directory for py-spy profiles per config")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout to measure too, in the same pass: its relay (1 worker, batch 400) and "
        "its csv consumer",
    )
    parser.add_argument(
        "--no-consumer", action="store_true", help="skip the consumer (and the 10 MB bodies)"
    )
    parser.add_argument(
        "--output", default="latest.json", help="file name of the results in bench/results"
    )
    parser.add_argument(
        "--brokers",
        type=int,
        choices=(1, 3),
        default=1,
        help="3: then the same configurations on a three-broker cluster with replication "
        "factor 3 and min.insync.replicas 2 (relay and ceiling), compared with one broker",
    )
    args = parser.parse_args(argv)
    args.workers = [1] if args.quick else [1, 2]
    args.batches = [400] if args.quick else [100, 400]
    args.warmup = 3.0
    args.seconds = 10.0 if args.quick else 20.0
    args.paced_seconds = 8.0 if args.quick else 15.0
    args.consumer_timeout = 45.0 if args.quick else 120.0
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = asyncio.run(run(args))
    text = orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n"
    (RESULTS / args.output).write_bytes(text)
    if not args.quick and args.output == "latest.json":
        from bench.chart import draw

        (RESULTS / "full.json").write_bytes(text)
        draw(results, RESULTS / "full.png")
    headline = (
        "relay_events_per_s",
        "ceiling_events_per_s",
        "ratio",
        "baseline_ratio",
        "p99_ms",
        "consumer_events_per_s",
        "baseline_consumer_events_per_s",
        "peak_rss_mb_10mb_bodies",
        "seconds",
    )
    print(", ".join(f"{name} {results[name]}" for name in headline if name in results))
    if "cluster" in results:
        cluster = results["cluster"]
        for name in ("one_broker", "on_cluster", "cluster_over_one_broker"):
            print(f"{name}: {orjson.dumps(cluster[name]).decode()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
