"""The archive: the sink's events/s per core and bytes stored per event (gzip JSON lines and
Parquet), and replay's events/s (reading alone, into a topic, into the alerts sink).

Runs in this process against a real S3 server (deploy/local/s3, started on a free port in a
temporary directory) and, for replay into a topic and into the alerts sink, a real broker
(``KAFKA_BOOTSTRAP``, or one deploy/local/kafka starts). Events are those of
``audit_common.samples``, decoded as the consumer decodes a record. Rates are per core of this
process (``time.process_time``): the S3 server's and broker's CPU is left out. The baseline,
measured in the same run, is decoding alone, which every consumer pays.

    .venv/bin/python -m bench.archive [--events 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from audit_common.headers import CLUSTER
from bench.alerts import published_values
from consumers.archive.layout import event_time
from consumers.archive.reading import Range
from consumers.archive.replay import Replay
from consumers.archive.store import ArchiveStore, StoreSettings
from consumers.events import ConsumedEvent, decode
from consumers.filters import EventFilter
from consumers.settings import build_parser
from consumers.sinks.alerts import AlertsSink
from consumers.sinks.archive import ArchiveSettings, ArchiveSink
from tests.support.kafka import LocalBroker, create_topic, unique_topic
from tests.support.net import unused_port, unused_port_pair
from tests.support.s3 import BUCKET, LocalS3

BATCH = 500


def consumed(values: Sequence[bytes]) -> list[ConsumedEvent]:
    return [
        decode(value, [(CLUSTER, b"bench")], topic="k8s-audit", partition=0, offset=offset)
        for offset, value in enumerate(values)
    ]


async def cpu_rate(count: int, work: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """Events per CPU second of this process, and per wall second."""
    cpu, wall = time.process_time(), time.monotonic()
    await work()
    return count / (time.process_time() - cpu), count / (time.monotonic() - wall)


async def archive_sink(
    events: list[ConsumedEvent], store: StoreSettings, form: str
) -> dict[str, Any]:
    settings = ArchiveSettings(store, max_bytes=8 * 2**20, max_seconds=3600, format=form)
    sink = ArchiveSink(settings)

    async def run() -> None:
        async with sink:
            for start in range(0, len(events), BATCH):
                await sink.write(events[start : start + BATCH])
                await sink.flush()
            await sink.drain()

    registry = CollectorRegistry()
    sink.register_metrics(registry)
    per_core, per_s = await cpu_rate(len(events), run)
    stored = registry.get_sample_value("audit_consumer_archive_bytes_total") or 0.0
    raw = sum(len(event.raw) for event in events)
    return {
        f"{form}_events_per_core_s": round(per_core),
        f"{form}_events_per_s": round(per_s),
        f"{form}_bytes_per_event": round(stored / len(events), 1),
        "json_bytes_per_event": round(raw / len(events), 1),
    }


async def replays(
    store: StoreSettings, events: list[ConsumedEvent], bootstrap: str
) -> dict[str, Any]:
    times = sorted(event_time(event) for event in events)
    where = Range("bench", times[0], times[-1] + timedelta(seconds=1))

    def replay() -> Replay:
        return Replay(ArchiveStore(store), where, EventFilter(), BATCH, progress=False)

    async def read_only() -> None:
        async for _ in replay().batches():
            pass

    topic = unique_topic("bench-replay")
    await create_topic(bootstrap, topic, 1)
    await create_topic(bootstrap, topic + ".alerts", 1)

    async def to_topic() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            await replay().to_topic(producer, topic)
        finally:
            await producer.stop()

    alerts_args = [
        "--sink",
        "alerts",
        "--kafka-bootstrap",
        bootstrap,
        "--alerts-topic",
        topic + ".alerts",
    ]
    sink = AlertsSink.from_args(build_parser(os.environ).parse_args(alerts_args))

    async def to_alerts() -> None:
        await replay().to_sink(sink)

    figures = {}
    for name, work in (("read", read_only), ("topic", to_topic), ("alerts", to_alerts)):
        per_core, per_s = await cpu_rate(len(events), work)
        figures[f"replay_{name}_events_per_core_s"] = round(per_core)
        figures[f"replay_{name}_events_per_s"] = round(per_s)
    return figures


async def main(count: int) -> dict[str, Any]:
    values = published_values(count)

    async def decode_only() -> None:
        consumed(values)

    baseline, _ = await cpu_rate(count, decode_only)
    events = consumed(values)
    with tempfile.TemporaryDirectory() as directory:
        s3 = LocalS3(unused_port(), Path(directory) / "s3")
        env = s3.start()
        os.environ.update(
            {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
        )
        broker = None
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
        if not bootstrap:
            broker = LocalBroker(unused_port_pair(), Path(directory) / "kafka")
            broker.start()
            bootstrap = broker.bootstrap
        try:
            store = StoreSettings(f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}", s3.endpoint)
            sink = await archive_sink(events, store, "jsonl")
            parquet = StoreSettings(f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}", s3.endpoint)
            sink |= await archive_sink(events, parquet, "parquet")
            replay = await replays(store, events, bootstrap)
        finally:
            s3.stop()
            if broker is not None:
                broker.stop()
    return {
        "events": count,
        "decode_only_events_per_core_s": round(baseline),
        **sink,
        "jsonl_cost_vs_decode": round(baseline / sink["jsonl_events_per_core_s"], 2),
        **replay,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50000)
    figures = asyncio.run(main(parser.parse_args().events))
    print(json.dumps(figures, indent=2))
