"""Events per cluster, the newest event per cluster and the end-to-end latency histogram."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from consumers.cluster_stats import MAX_CLUSTERS, ClusterStats
from consumers.events import ConsumedEvent, decode
from consumers.metrics import ConsumerMetrics
from tests.consumers.conftest import StartConsumer
from tests.consumers.messages import produce_events, produce_raw, with_fresh_ids
from tests.consumers.probes import scrape, value
from tests.support.net import unused_port, wait_until
from tests.support.processes import wait_for_exit_or_fail


def stamp(moment: datetime) -> str:
    """As the apiserver writes a stageTimestamp (RFC 3339, microseconds, UTC)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(cluster: str | None, stage_timestamp: str, offset: int = 0) -> ConsumedEvent:
    value = orjson.dumps({"auditID": f"id-{offset}", "stageTimestamp": stage_timestamp})
    headers = [] if cluster is None else [("cluster", cluster.encode())]
    return decode(value, headers, topic="t", partition=0, offset=offset)


def sample(metrics: ConsumerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_clusters_past_the_cap_count_as_other_and_a_missing_header_as_unknown() -> None:
    metrics = ConsumerMetrics()
    stats = ClusterStats(metrics)
    now = stamp(datetime.now(UTC))
    names = [f"cluster-{i}" for i in range(MAX_CLUSTERS + 5)]
    stats.consumed([event(name, now) for name in names] + [event(None, now)] * 2)
    stats.consumed([event(names[0], now), event(names[-1], now)])
    assert sample(metrics, "audit_consumer_events_total", cluster=names[0]) == 2
    assert sample(metrics, "audit_consumer_events_total", cluster=names[MAX_CLUSTERS - 1]) == 1
    assert sample(metrics, "audit_consumer_events_total", cluster=names[MAX_CLUSTERS]) is None
    assert sample(metrics, "audit_consumer_events_total", cluster="other") == 6
    assert sample(metrics, "audit_consumer_events_total", cluster="unknown") == 2
    families = {f.name: f for f in metrics.registry.collect()}
    labels = {s.labels["cluster"] for s in families["audit_consumer_events"].samples}
    assert len(labels) == MAX_CLUSTERS + 2


def test_the_newest_timestamp_never_goes_back() -> None:
    metrics = ConsumerMetrics()
    stats = ClusterStats(metrics)
    base = datetime(2024, 6, 4, 17, 58, 49, 696299, tzinfo=UTC)
    stats.consumed([event("a", stamp(base)), event("a", stamp(base + timedelta(seconds=3)))])
    stats.consumed([event("a", stamp(base - timedelta(hours=1)))])  # a late partition
    newest = sample(metrics, "audit_consumer_newest_event_timestamp_seconds", cluster="a")
    assert newest == (base + timedelta(seconds=3)).timestamp()


async def test_two_clusters_counted_timed_and_their_latency_observed_once_written(
    kafka_bootstrap: str,
    new_topic: Any,
    start_consumer: StartConsumer,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    topic = await new_topic(2)
    now = datetime.now(UTC)
    # prod's events happened two minutes ago (a backlog); dev's just now.
    prod = with_fresh_ids(3)
    prod_stamps = [now - timedelta(seconds=120 + i) for i in range(3)]
    for item, moment in zip(prod, prod_stamps, strict=True):
        item["stageTimestamp"] = stamp(moment)
    dev = with_fresh_ids(2)
    await produce_events(kafka_bootstrap, topic, prod, cluster="prod")
    await produce_events(kafka_bootstrap, topic, dev, cluster="dev")
    await produce_raw(kafka_bootstrap, topic, [b"not an event"])  # counted nowhere
    port = unused_port()
    consumer = start_consumer(
        "--sink", "jsonl", "--topic", topic, "--output", str(tmp_path / "out.jsonl"),
        "--metrics-listen", f"127.0.0.1:{port}",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    async def all_written() -> bool:
        samples = await scrape(http, base)
        return value(samples, "audit_consumer_events_written_total") == 5

    await wait_until(all_written, timeout=30, what="5 events written")
    samples = await scrape(http, base)
    assert value(samples, "audit_consumer_events_total", cluster="prod") == 3
    assert value(samples, "audit_consumer_events_total", cluster="dev") == 2
    assert value(samples, "audit_consumer_events_total", cluster="unknown") is None
    newest_prod = value(samples, "audit_consumer_newest_event_timestamp_seconds", cluster="prod")
    assert newest_prod == prod_stamps[0].timestamp()
    newest_dev = value(samples, "audit_consumer_newest_event_timestamp_seconds", cluster="dev")
    assert newest_dev == datetime.fromisoformat(dev[0]["stageTimestamp"]).timestamp()

    def latency(name: str, **labels: str) -> float | None:
        return value(samples, f"audit_consumer_event_latency_seconds{name}", **labels)

    assert latency("_count") == 5
    # dev's two were written within a minute of happening, prod's three two minutes after.
    assert latency("_bucket", le="60.0") == 2
    assert latency("_bucket", le="300.0") == 5
    total = latency("_sum")
    assert total is not None and total >= 3 * 120
    assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0
