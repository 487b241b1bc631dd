"""bench/cluster.py's comparison of a one-broker pass with a pass on the cluster."""

from __future__ import annotations

from typing import Any

from bench.cluster import compare


def a_pass(events_per_s: float, per_cpu_s: float, ceiling: float) -> dict[str, Any]:
    config = {
        "workers": 1,
        "batch": 400,
        "max": {"events_per_s": events_per_s, "p99_ms": 40.0, "events_per_relay_cpu_s": per_cpu_s},
        "at_75_percent": {"p99_ms": 20.0},
    }
    return {
        "configs": [{**config, "batch": 100}, config],
        "ceiling": {"events_per_s": ceiling},
        "ratio": round(events_per_s / ceiling, 3),
    }


def test_the_cluster_is_compared_with_one_broker_on_one_worker_with_batches_of_400() -> None:
    result = compare(a_pass(10_000, 20_000, 50_000), a_pass(6_000, 16_000, 30_000), brokers=3)
    assert result["one_broker"]["relay_cpu_us_per_event"] == 50.0
    assert result["on_cluster"]["relay_cpu_us_per_event"] == 62.5
    assert result["on_cluster"]["ratio_to_ceiling"] == 0.2
    assert result["cluster_over_one_broker"] == {
        "relay_events_per_s": 0.6,
        "ceiling_events_per_s": 0.6,
        "relay_cpu_us_per_event": 1.25,
    }
    assert (result["brokers"], result["replication_factor"]) == (3, 3)


def test_a_rate_without_relay_cpu_gives_no_cost_per_event_and_no_ratio_of_it() -> None:
    result = compare(a_pass(10_000, 0.0, 50_000), a_pass(6_000, 16_000, 30_000), brokers=3)
    assert result["one_broker"]["relay_cpu_us_per_event"] is None
    assert "relay_cpu_us_per_event" not in result["cluster_over_one_broker"]
