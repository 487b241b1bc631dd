"""Keys of archive objects, the hours a time range reads, and the commands' answers to bad
ranges and URLs."""

from __future__ import annotations

import subprocess
import sys
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


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumers", *args], capture_output=True, text=True, timeout=60
    )


def test_a_bad_url_or_range_is_a_clear_error() -> None:
    range_ = ["--since", "2026-01-05T10:00Z", "--until", "2026-01-05T11:00Z"]
    done = run("replay", "ftp://host/archive", *range_, "--to-topic", "t")
    assert done.returncode == 2 and "expected s3://BUCKET[/PREFIX]" in done.stderr
    done = run("replay", "s3://bucket", *range_)
    assert done.returncode == 2 and "give one of --to-topic TOPIC or --sink NAME" in done.stderr
    done = run("archive", "verify", "s3://bucket", "--since", "yesterday")
    assert done.returncode == 2 and "'yesterday' is not a time" in done.stderr
    assert "Traceback" not in done.stderr
