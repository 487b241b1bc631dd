"""The batch histogram exposes what prometheus_client's Histogram does for the same values."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from consumers.batch_histogram import BatchHistogram

BUCKETS = (0.05, 1, 60, 3600)


def without_created(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if "_created" not in line]


def test_the_exposition_is_the_one_of_a_histogram_observed_value_by_value() -> None:
    values = [0.0, 0.05, 0.050001, 1, 59.9, 60, 3600, 3600.5, 86400.0, 0.2]
    reference_registry, batch_registry = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("latency_seconds", "doc", buckets=BUCKETS, registry=reference_registry)
    batch = BatchHistogram("latency_seconds", "doc", BUCKETS, batch_registry)
    for value in values:
        reference.observe(value)
    batch.observe_many(values[:4])
    batch.observe_many(iter(values[4:]))
    batch.observe_many([])
    assert without_created(generate_latest(batch_registry)) == without_created(
        generate_latest(reference_registry)
    )
    assert batch_registry.get_sample_value("latency_seconds_bucket", {"le": "60.0"}) == 7
    assert batch_registry.get_sample_value("latency_seconds_count") == len(values)
