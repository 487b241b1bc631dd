"""Keys of archive objects, and the hours a time range reads."""

from __future__ import annotations

from datetime import UTC, datetime

from consumers.archive.layout import ObjectKey, hours_between
from consumers.archive.reading import parse_time


def test_a_key_names_cluster_date_hour_topic_partition_and_offsets_and_parses_back() -> None:
    key = ObjectKey("prod/eu", datetime(2026, 1, 5, 14, tzinfo=UTC), "k8s-audit", 2, 10, 99)
    assert key.path == "cluster=prod%2Feu/date=2026-01-05/hour=14/k8s-audit-2-10-99.jsonl.gz"
    assert ObjectKey.parse(key.path) == key
    assert ObjectKey.parse(key.path + ".meta.json") is None
    assert ObjectKey.parse("cluster=a/date=2026-13-01/hour=01/t-0-1-2.jsonl.gz") is None


def test_a_range_reads_its_hours_and_the_next_one_for_late_events() -> None:
    hours = list(hours_between(parse_time("2026-01-05T13:30:00Z"), parse_time("2026-01-05T15:00Z")))
    assert [h.hour for h in hours] == [13, 14, 15]
    assert parse_time("2026-01-05") == datetime(2026, 1, 5, tzinfo=UTC)
