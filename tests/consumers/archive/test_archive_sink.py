"""``ArchiveSink`` on a real ``file://`` store: when objects are cut, what ``held`` reports, and
that a restart finds an object written but not committed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from audit_common.errors import ConfigError
from audit_common.headers import CLUSTER
from consumers.archive.reading import Range, find_objects, read_objects
from consumers.archive.store import ArchiveStore, StoreSettings
from consumers.archive.verify import verify
from consumers.events import ConsumedEvent, decode
from consumers.settings import build_settings
from consumers.sinks.archive import ArchiveSettings, ArchiveSink

START = datetime(2026, 1, 5, 13, 50, tzinfo=UTC)


def event(offset: int, minutes: float, cluster: str = "a", partition: int = 0) -> ConsumedEvent:
    stamp = (START + timedelta(minutes=minutes)).isoformat()
    value = orjson.dumps(
        {"auditID": f"id-{offset}", "stage": "ResponseComplete", "stageTimestamp": stamp}
    )
    return decode(
        value, [(CLUSTER, cluster.encode())], topic="t", partition=partition, offset=offset
    )


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def sink_on(tmp_path: Path, clock: Clock, max_bytes: int = 10**6) -> ArchiveSink:
    store = StoreSettings(f"file://{tmp_path}/archive")
    return ArchiveSink(ArchiveSettings(store, max_bytes, 60.0), clock)


async def paths(tmp_path: Path) -> list[str]:
    store = ArchiveStore(StoreSettings(f"file://{tmp_path}/archive"))
    return [key.path for key in await find_objects(store, Range())]


async def test_objects_are_cut_by_hour_cluster_gap_and_age_and_held_offsets_are_reported(
    tmp_path: Path,
) -> None:
    clock = Clock()
    async with sink_on(tmp_path, clock) as sink:
        # 13:50, 13:55, then 14:00 (a new hour), a late 13:58 (stays), cluster b, a gap.
        await sink.write([event(0, 0), event(1, 5), event(2, 10), event(3, 8), event(4, 11, "b")])
        await sink.write([event(6, 12, "b")])
        assert sink.held() == {("t", 0): 0}
        await sink.flush()  # the closed objects only: the last is not 60 s old
        assert sink.held() == {("t", 0): 6}
        clock.now = 61
        await sink.flush()
        assert sink.held() == {}
    assert await paths(tmp_path) == [
        "cluster=a/date=2026-01-05/hour=13/t-0-0-1.jsonl.gz",
        "cluster=a/date=2026-01-05/hour=14/t-0-2-3.jsonl.gz",
        "cluster=b/date=2026-01-05/hour=14/t-0-4-4.jsonl.gz",
        "cluster=b/date=2026-01-05/hour=14/t-0-6-6.jsonl.gz",
    ]
    store = ArchiveStore(StoreSettings(f"file://{tmp_path}/archive"))
    keys = await find_objects(store, Range())
    reads = [read async for read in read_objects(store, keys)]
    assert [read.problem for read in reads] == [None] * 4
    assert reads[1].metadata["count"] == "2"


async def test_a_restart_skips_an_object_already_written_and_takes_a_retried_batch_once(
    tmp_path: Path,
) -> None:
    clock = Clock()
    async with sink_on(tmp_path, clock, max_bytes=1) as sink:  # one event an object
        await sink.write([event(0, 0), event(1, 1)])
        await sink.flush()
    async with sink_on(tmp_path, clock) as sink:  # a restart from offset 0: not committed
        batch = [event(0, 0), event(1, 1), event(2, 2)]
        await sink.write(batch)
        await sink.write(batch)  # the runner's retry of the same batch
        assert sink.held() == {("t", 0): 2}
        await sink.drain()
    assert await paths(tmp_path) == [
        f"cluster=a/date=2026-01-05/hour=13/t-0-{n}-{n}.jsonl.gz" for n in range(3)
    ]


def test_the_archive_keeps_every_event_so_filters_are_refused_and_repeats_kept() -> None:
    flags = ["--sink", "archive", "--archive-url", "s3://bucket/audit"]
    settings, sink, _ = build_settings([*flags, "--dedupe-window", "50"], {})
    assert isinstance(sink, ArchiveSink) and settings.dedupe_window == 0
    with pytest.raises(ConfigError, match="--include/--exclude not allowed"):
        build_settings([*flags, "--exclude", "verb=get"], {})
    with pytest.raises(ConfigError, match="needs --archive-url"):
        build_settings(["--sink", "archive"], {})
    with pytest.raises(ConfigError, match="expected s3://"):
        build_settings(["--sink", "archive", "--archive-url", "ftp://x"], {})


async def test_parquet_objects_hold_the_queried_columns_and_verify_as_their_events(
    tmp_path: Path,
) -> None:
    url = f"file://{tmp_path}/archive"
    events = [event(n, n) for n in range(5)]
    sink = ArchiveSink(ArchiveSettings(StoreSettings(url), format="parquet"), Clock())
    async with sink:
        await sink.write(events)
        await sink.drain()
    store = ArchiveStore(StoreSettings(url))
    (key,) = await find_objects(store, Range())
    assert key.path == "cluster=a/date=2026-01-05/hour=13/t-0-0-4.parquet"
    (read,) = [read async for read in read_objects(store, [key])]
    assert read.problem is None and read.lines == [e.raw for e in events]
    table = pq.read_table(tmp_path / "archive" / key.path)
    assert table.column("auditID").to_pylist() == [f"id-{n}" for n in range(5)]
    assert table.column("time").to_pylist()[1] == START + timedelta(minutes=1)
    assert (await verify(store, Range())).problems == []
