"""The relay on a three-broker cluster (replication factor 3, min.insync.replicas 2) against
one broker, in the same run of ``bench/run.py --brokers 3`` (issue 24).

Each side has its own ceiling (Kafka's ProducerPerformance on the same Kafka, topics with the
same replication), so the cluster's cost to the relay shows both as a rate and as a ratio to
what Kafka's own client does there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.cluster import LocalCluster
from tests.support.net import unused_port_run

if TYPE_CHECKING:
    import psutil


@contextlib.contextmanager
def kafka_cluster(work: Path, brokers: int) -> Iterator[tuple[str, list[psutil.Process]]]:
    """KAFKA_CLUSTER_BOOTSTRAP's cluster, or one started here (``deploy/local/kafka
    --brokers``) and stopped at the end; its bootstrap and its brokers' JVMs."""
    # Here, not at the top: ``compare`` is tested where the bench extra (psutil) is not installed.
    from bench.procs import broker_process

    given = os.environ.get("KAFKA_CLUSTER_BOOTSTRAP")
    if given:
        yield given, []
        return
    cluster = LocalCluster(unused_port_run(2 * brokers), work / "cluster", size=brokers)
    print(f"starting a {brokers}-broker cluster on {cluster.bootstrap}", flush=True)
    cluster.start()
    try:
        yield cluster.bootstrap, [p for b in cluster.brokers for p in broker_process(b.state_dir)]
    finally:
        cluster.stop()


def _figures(one_pass: dict[str, Any]) -> dict[str, Any]:
    """One worker, batches of 400: events/s at the maximum, p99 at 75% of it, relay CPU per
    event, the ceiling on the same Kafka."""
    top = next(c for c in one_pass["configs"] if c["workers"] == 1 and c["batch"] == 400)
    per_cpu_s = top["max"]["events_per_relay_cpu_s"]
    return {
        "relay_events_per_s": top["max"]["events_per_s"],
        "p99_ms_at_75_percent": top["at_75_percent"]["p99_ms"],
        "p99_ms_at_max": top["max"]["p99_ms"],
        "relay_cpu_us_per_event": round(1e6 / per_cpu_s, 1) if per_cpu_s else None,
        "broker_cpu_cores_at_max": top["max"].get("broker_cpu_cores"),
        "ceiling_events_per_s": one_pass["ceiling"]["events_per_s"],
        "ratio_to_ceiling": one_pass["ratio"],
    }


def compare(one_broker: dict[str, Any], cluster: dict[str, Any], brokers: int) -> dict[str, Any]:
    """The cluster's figures, one broker's, and the cluster's as a fraction of one broker's."""
    one, three = _figures(one_broker), _figures(cluster)
    ratios = {
        name: round(three[name] / one[name], 3)
        for name in ("relay_events_per_s", "ceiling_events_per_s", "relay_cpu_us_per_event")
        if one[name] and three[name]
    }
    return {
        "brokers": brokers,
        "replication_factor": 3,
        "min_insync_replicas": 2,
        "one_broker": one,
        "on_cluster": three,
        "cluster_over_one_broker": ratios,
        "configs": cluster["configs"],
        "ceiling": cluster["ceiling"],
    }
