"""``--sink archive``, ``archive verify`` and ``replay`` against the real broker and a real S3
server (deploy/local/s3): every event archived once, nothing lost to a SIGKILL mid-upload,
replay of a range gives exactly its events, verify finds a deleted and a changed object."""

from __future__ import annotations

import asyncio
import gzip
import signal
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from consumers.archive.layout import ObjectKey
from consumers.archive.reading import Range, find_objects, read_objects
from tests.consumers.archive.conftest import Archive
from tests.consumers.conftest import StartConsumer
from tests.consumers.messages import produce_events, with_fresh_ids
from tests.support.events import event_list
from tests.support.kafka import committed_and_end, read_topic, unique_topic
from tests.support.net import wait_until
from tests.support.processes import run_module, wait_for_exit_or_fail

SMALL_OBJECTS = ["--archive-max-bytes", "40000"]


async def archived(archive: Archive) -> tuple[list[ObjectKey], list[bytes]]:
    """Every object of the archive (checked against its metadata) and every line in them."""
    store = archive.store()
    keys = await find_objects(store, Range())
    lines = []
    async for read in read_objects(store, keys):
        assert read.problem is None, f"{read.key.path}: {read.problem}"
        lines.extend(read.lines)
    return keys, lines


def assert_contiguous(keys: list[ObjectKey], ends: dict[int, int]) -> None:
    """Per partition the objects cover offsets 0 .. end-1 exactly once."""
    for partition, end in ends.items():
        ranges = sorted((k.first, k.last) for k in keys if k.partition == partition)
        covered = [offset for first, last in ranges for offset in range(first, last + 1)]
        assert covered == list(range(end)), f"partition {partition}: {ranges}"


def run_command(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_module("consumers", *args, env={"PATH": "/usr/bin:/bin", **env})


async def test_every_relayed_event_is_archived_once_and_offsets_wait_for_the_object(
    start_relay: Any, start_consumer: StartConsumer, http: aiohttp.ClientSession, archive: Archive
) -> None:
    relay = await start_relay()
    events = with_fresh_ids(600)
    async with http.post(relay.url, data=event_list(events)) as response:
        assert response.status == 200
    records = await read_topic(relay.bootstrap, relay.topic, len(events))
    consumer = start_consumer(
        "--sink", "archive", "--topic", relay.topic, "--archive-url", archive.url,
        *archive.flags, *SMALL_OBJECTS, "--archive-max-seconds", "600",
        group="archive", env=archive.env,
    )  # fmt: skip
    # Objects full by size are written and committed; the rest is held, and not committed.
    await wait_until(
        lambda: _committed_some(relay.bootstrap, relay.topic), timeout=30, what="a commit"
    )
    committed, end = await committed_and_end(relay.bootstrap, "archive", relay.topic, 3)
    assert 0 < committed < end == len(events)
    assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 30) == 0
    assert await committed_and_end(relay.bootstrap, "archive", relay.topic, 3) == (end, end)
    keys, lines = await archived(archive)
    # Exactly the records' values, each once: count and bytes.
    assert Counter(lines) == Counter(record.value for record in records)
    assert sum(map(len, lines)) == sum(len(record.value) for record in records)
    ends = Counter(record.partition for record in records)
    assert_contiguous(keys, dict(ends))
    assert {k.cluster for k in keys} == {"default"}
    assert "Traceback" not in consumer.stderr()


async def _committed_some(bootstrap: str, topic: str) -> bool:
    committed, _ = await committed_and_end(bootstrap, "archive", topic, 3)
    return committed > 0


async def test_sigkill_during_an_upload_loses_nothing_and_writes_no_other_keys(
    new_topic: Any, kafka_bootstrap: str, start_consumer: StartConsumer, private_archive: Any
) -> None:
    archive: Archive = private_archive()
    topic = await new_topic(2)
    events = with_fresh_ids(800)
    await produce_events(kafka_bootstrap, topic, events)
    flags = ["--sink", "archive", "--topic", topic, "--archive-url", archive.url, *archive.flags]
    first = start_consumer(*flags, *SMALL_OBJECTS, group="kill", env=archive.env)
    store = archive.store()

    async def some_objects() -> bool:
        return len(await find_objects(store, Range())) >= 2

    await wait_until(some_objects, timeout=30, what="objects written")
    archive.server.pause()  # the next uploads hang
    await asyncio.sleep(1.0)
    first.signal(signal.SIGKILL)
    first.wait(10)
    archive.server.resume()
    # Another batching: objects end elsewhere, yet none overlaps one already written.
    second = start_consumer(
        *flags, "--archive-max-bytes", "70000", "--archive-max-seconds", "1",
        group="kill", env=archive.env,
    )  # fmt: skip

    async def all_committed() -> bool:
        committed, end = await committed_and_end(kafka_bootstrap, "kill", topic, 2)
        return committed == end == len(events)

    await wait_until(all_committed, timeout=60, what="every offset committed")
    assert wait_for_exit_or_fail(second, signal.SIGTERM, 30) == 0
    records = await read_topic(kafka_bootstrap, topic, len(events))
    keys, lines = await archived(archive)
    assert Counter(lines) == Counter(record.value for record in records)
    assert_contiguous(keys, dict(Counter(record.partition for record in records)))
    assert "Traceback" not in second.stderr()


def _spread(count: int, start: datetime, step: timedelta) -> list[dict[str, Any]]:
    events = with_fresh_ids(count)
    for index, event in enumerate(events):
        moment = (start + index * step).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event["requestReceivedTimestamp"] = event["stageTimestamp"] = moment
    return events


async def test_replay_of_a_range_gives_exactly_its_events_and_verify_finds_tampering(
    new_topic: Any, kafka_bootstrap: str, start_consumer: StartConsumer, archive: Archive,
    tmp_path: Path,
) -> None:  # fmt: skip
    topic = await new_topic(2)
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    alpha = _spread(300, base, timedelta(seconds=36))  # 3 hours
    beta = _spread(100, base, timedelta(seconds=108))
    await produce_events(kafka_bootstrap, topic, alpha, cluster="alpha")
    await produce_events(kafka_bootstrap, topic, beta, cluster="beta")
    consumer = start_consumer(
        "--sink", "archive", "--topic", topic, "--archive-url", archive.url, *archive.flags,
        "--archive-max-seconds", "1", group="replay", env=archive.env,
    )  # fmt: skip

    async def all_committed() -> bool:
        committed, end = await committed_and_end(kafka_bootstrap, "replay", topic, 2)
        return committed == end == 400

    await wait_until(all_committed, timeout=60, what="every offset committed")
    assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 30) == 0
    keys, _ = await archived(archive)
    assert {k.hour for k in keys} == {base + timedelta(hours=h) for h in range(3)}

    since, until = base + timedelta(minutes=50), base + timedelta(minutes=130)
    in_range = [
        e for e in alpha if since.isoformat() <= _iso(e) < until.isoformat()
    ]  # 80 minutes of alpha
    target = unique_topic("replayed")
    done = run_command(
        "replay", archive.url, *archive.flags, "--kafka-bootstrap", kafka_bootstrap,
        "--since", since.isoformat(), "--until", until.isoformat(), "--cluster", "alpha",
        "--to-topic", target, env=archive.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"replayed {len(in_range)} events" in done.stdout
    replayed = await read_topic(kafka_bootstrap, target, len(in_range))
    assert sorted(orjson.loads(r.value)["auditID"] for r in replayed) == sorted(
        e["auditID"] for e in in_range
    )
    headers = dict(replayed[0].headers)
    assert headers["cluster"] == b"alpha" and archive.url.encode() in headers["replay"]

    output = tmp_path / "replayed.jsonl"
    done = run_command(
        "replay", archive.url, *archive.flags, "--since", since.isoformat(),
        "--until", until.isoformat(), "--sink", "jsonl", "--output", str(output),
        env=archive.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    both = in_range + [e for e in beta if since.isoformat() <= _iso(e) < until.isoformat()]
    written = [orjson.loads(line)["auditID"] for line in output.read_bytes().splitlines()]
    assert sorted(written) == sorted(e["auditID"] for e in both)

    verify = ["archive", "verify", archive.url, *archive.flags]
    done = run_command(*verify, env=archive.env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("400 events: complete")
    store = archive.store()
    by_partition = sorted((k for k in keys if k.partition == 0), key=lambda k: k.first)
    deleted, changed = by_partition[1], by_partition[2]
    archive.file(deleted.path).unlink()
    body, metadata = await store.get(changed.path)
    lines = gzip.decompress(body).replace(b'"verb":"', b'"verb":"x', 1)
    await store.put(changed.path, gzip.compress(lines), metadata)
    done = run_command(*verify, env=archive.env)
    assert done.returncode == 1
    assert f"gap: {topic}-0 offsets {deleted.first}-{deleted.last} are in no object" in done.stdout
    assert f"mismatch: {changed.path}: SHA-256 of the lines differs" in done.stdout

    done = run_command(
        "replay", archive.url, "--since", until.isoformat(), "--until", since.isoformat(),
        "--to-topic", target, env=archive.env,
    )  # fmt: skip
    assert done.returncode == 2 and "is not before --until" in done.stderr


def _iso(event: dict[str, Any]) -> str:
    return datetime.fromisoformat(event["stageTimestamp"]).isoformat()
