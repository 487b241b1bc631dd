"""``audit-source file`` end to end: a real process reading an audit log lumberjack-style,
publishing to the session's broker; killed with real signals."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import aiohttp
import orjson

from tests.support.audit_log import LumberjackLog, identity, log_lines
from tests.support.events import carries_secret_values
from tests.support.kafka import read_topic, topic_size, unique_topic
from tests.support.net import unused_port, wait_until
from tests.support.processes import ProcessFactory, wait_for_exit_or_fail
from tests.support.sources import (
    SourceProcess,
    assert_nothing_lost_repeats_counted,
)


def file_source(
    processes: ProcessFactory,
    bootstrap: str,
    topic: str,
    log: Path,
    checkpoints: Path,
    *extra: str,
) -> SourceProcess:
    return SourceProcess(
        processes, bootstrap, topic, checkpoints, "file", "--path", str(log), "--from-start", *extra
    )


def checkpointed(checkpoints: Path) -> int | None:
    """The offset the file source's checkpoint records, or None before it has one."""
    try:
        saved = orjson.loads((checkpoints / "file.json").read_bytes())
    except FileNotFoundError:
        return None
    return saved["position"]["offset"] if saved["position"] else None


async def test_rotation_mid_read_gzip_backfill_and_sigterm(
    kafka_bootstrap: str, processes: ProcessFactory, tmp_path: Path
) -> None:
    """--from-start imports a gzipped rotated file, a plain one and the live file, then follows
    the live file through a rotation; every event once, with the source and cluster headers."""
    bootstrap, topic = kafka_bootstrap, unique_topic()
    log = LumberjackLog(tmp_path / "audit.log")
    lines = log_lines(900, seed=1)
    log.write(b"".join(lines[:200]))
    log.rotate(compress=True)
    log.write(b"".join(lines[200:400]))
    log.rotate()
    log.write(b"".join(lines[400:600]))
    source = file_source(processes, bootstrap, topic, log.path, tmp_path / "cp")
    await wait_until(lambda: topic_size(bootstrap, topic), timeout=20, what="first events")
    log.write(b"".join(lines[600:750]))
    log.rotate(compress=True)  # rotated while being read
    log.write(b"".join(lines[750:]))
    records = await read_topic(bootstrap, topic, len(lines), timeout=20)
    assert Counter(identity(record.value) for record in records) == Counter(map(identity, lines))
    # Each event's bytes as the apiserver wrote them, but a Secret's, redacted as the relay's.
    written = {identity(line): line for line in lines}
    for record in records:
        line = written[identity(record.value)]
        redacted = carries_secret_values(orjson.loads(line))
        assert (record.value + b"\n" != line) == redacted, line[:120]
    for record in records:
        headers = dict(record.headers)
        assert headers["source"] == b"file" and headers["cluster"] == b"edge-1"
    assert await source.metric("audit_source_events_read_total") == len(lines)
    assert await source.metric("audit_source_lag_seconds") == 0
    assert (await source.status("/healthz"), await source.status("/readyz")) == (200, 200)
    assert wait_for_exit_or_fail(source.process, signal.SIGTERM, timeout=20) == 0


async def test_sigkill_and_restart_lose_nothing(
    kafka_bootstrap: str, processes: ProcessFactory, tmp_path: Path
) -> None:
    """Killed mid-read, with a rotation while it is down: the restart resumes at the checkpoint;
    every event reaches Kafka, and the events repeated are no more than the metric counts."""
    bootstrap, topic = kafka_bootstrap, unique_topic()
    log = LumberjackLog(tmp_path / "audit.log")
    lines = log_lines(6000, seed=2)
    log.write(b"".join(lines[:4000]))
    args = (processes, bootstrap, topic, log.path, tmp_path / "cp")
    first = file_source(*args)
    await wait_until(lambda: topic_size(bootstrap, topic), timeout=20, what="first events")
    first.process.signal(signal.SIGKILL)
    first.process.wait(10)
    log.rotate(compress=True)
    log.write(b"".join(lines[4000:]))
    second = file_source(*args)
    await assert_nothing_lost_repeats_counted(bootstrap, topic, lines, second, timeout=30)


async def test_unfinished_line_waited_for_and_malformed_line_dead_lettered(
    kafka_bootstrap: str, processes: ProcessFactory, tmp_path: Path
) -> None:
    """A line the apiserver is still writing is delivered once whole, not dead-lettered; a line
    that is no event is dead-lettered (with the source header) and the lines around it go on."""
    bootstrap, topic = kafka_bootstrap, unique_topic()
    log = LumberjackLog(tmp_path / "audit.log")
    lines = log_lines(21, seed=3)
    log.write(b"".join(lines[:10]) + b'{"kind":"Event", not json\n' + b"".join(lines[10:20]))
    last = lines[20]
    log.write(last[:40])
    source = file_source(processes, bootstrap, topic, log.path, tmp_path / "cp")
    await read_topic(bootstrap, topic, 20, timeout=20)
    [dead] = await read_topic(bootstrap, f"{topic}.dead", 1, timeout=20)
    assert dict(dead.headers)["source"] == b"file"
    log.write(last[40:])
    records = await read_topic(bootstrap, topic, 21, timeout=20)
    assert Counter(identity(record.value) for record in records) == Counter(map(identity, lines))
    assert await topic_size(bootstrap, f"{topic}.dead") == 1
    assert await source.metric("audit_source_events_read_total") == 22  # 21 events, 1 not


async def test_kafka_down_events_spooled_checkpointed_then_delivered(
    kafka_bootstrap: str, processes: ProcessFactory, tmp_path: Path
) -> None:
    """With Kafka unreachable the source spools and moves its checkpoint on (exit status 3 at a
    stop); started again with Kafka up, it replays the spool and reads nothing twice."""
    bootstrap, topic = kafka_bootstrap, unique_topic()
    log = LumberjackLog(tmp_path / "audit.log")
    lines = log_lines(50, seed=7)
    log.write(b"".join(lines))
    checkpoints, spool = tmp_path / "cp", str(tmp_path / "spool")
    down = f"127.0.0.1:{unused_port()}"
    flags = ("--spool-dir", spool, "--ack-timeout", "1")
    first = file_source(processes, down, topic, log.path, checkpoints, *flags)

    await wait_until(
        lambda: checkpointed(checkpoints) == log.path.stat().st_size,
        timeout=20,
        what="the checkpoint past the spooled lines",
    )
    assert wait_for_exit_or_fail(first.process, signal.SIGTERM, timeout=20) == 3  # SPOOLED
    second = file_source(processes, bootstrap, topic, log.path, checkpoints, *flags)
    records = await read_topic(bootstrap, topic, len(lines), timeout=20)
    assert Counter(identity(record.value) for record in records) == Counter(map(identity, lines))
    assert await second.metric("audit_source_events_read_total") == 0


async def test_a_first_start_without_from_start_begins_at_the_live_files_end(
    kafka_bootstrap: str, processes: ProcessFactory, tmp_path: Path
) -> None:
    """What the DaemonSet does on a new node: the lines already there are not imported."""
    bootstrap, topic = kafka_bootstrap, unique_topic()
    log = LumberjackLog(tmp_path / "audit.log")
    lines = log_lines(15, seed=8)
    log.write(b"".join(lines[:10]))
    checkpoints = tmp_path / "cp"
    SourceProcess(processes, bootstrap, topic, checkpoints, "file", "--path", str(log.path))

    await wait_until(
        lambda: checkpointed(checkpoints) == log.path.stat().st_size,
        timeout=20,
        what="the checkpoint at the live file's end",
    )
    log.write(b"".join(lines[10:]))
    records = await read_topic(bootstrap, topic, 5, timeout=20)
    assert Counter(identity(r.value) for r in records) == Counter(map(identity, lines[10:]))


async def test_not_ready_while_kafka_is_unreachable_without_a_spool(
    processes: ProcessFactory, tmp_path: Path
) -> None:
    log = LumberjackLog(tmp_path / "audit.log")
    down = f"127.0.0.1:{unused_port()}"
    source = file_source(processes, down, unique_topic(), log.path, tmp_path / "cp")

    async def alive() -> bool:
        try:
            return await source.status("/healthz") == 200
        except aiohttp.ClientError:
            return False

    await wait_until(alive, timeout=20, what="/healthz")
    assert await source.status("/readyz") == 503
    assert wait_for_exit_or_fail(source.process, signal.SIGTERM, timeout=20) == 0
