"""audit-consumer as operators run it: real processes, the real relay, real signals."""

from __future__ import annotations

import csv
import re
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from relay.events.build import invalid_reason
from tests.consumers.conftest import StartConsumer
from tests.consumers.messages import original_row, produce_events, with_fresh_ids
from tests.support.events import audit_events, event_list
from tests.support.kafka import committed_and_end, unique_topic
from tests.support.net import unused_port, wait_until
from tests.support.processes import Process, ProcessFactory, wait_for_exit_or_fail


def jsonl_ids(*paths: Path) -> list[str]:
    """The auditIDs of every whole line of the files (and their rotated siblings), oldest first.

    A line without its newline is one a SIGKILL cut short: the consumer drops it on restart.
    While the consumer runs, a file may rotate away between the listing and its reading: its
    lines are then missed this once (callers wait until they see enough).
    """
    ids = []
    for path in paths:
        siblings = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]))
        for file in [*siblings, path]:
            try:
                whole_lines = file.read_bytes().split(b"\n")[:-1]
            except FileNotFoundError:
                continue
            ids.extend(orjson.loads(line)["auditID"] for line in whole_lines)
    return ids


def assigned_partitions(process: Process) -> set[int]:
    """The partitions of the process's latest 'partitions assigned' log line."""
    lines = re.findall(r"partitions assigned: \S+\[([\d,]*)\]", process.stderr())
    return {int(p) for p in lines[-1].split(",")} if lines and lines[-1] else set()


def event_key(event: dict[str, Any]) -> tuple[Any, ...]:
    return event["auditID"], event.get("stage"), event.get("stageTimestamp")


async def test_every_event_from_a_post_to_csv_rows(
    start_relay: Any, start_consumer: StartConsumer, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    events = audit_events()
    publishable = [e for e in events if invalid_reason(e) is None]
    async with http.post(relay.url, data=event_list(events)) as response:
        assert response.status == 200
        assert (await response.json())["accepted"] == len(publishable)
    # Two pairs of distinct events share (auditID, stage, stageTimestamp): both of each
    # pair are rows; the default dedupe window drops only identical repeats.
    expected = publishable
    assert len({event_key(e) for e in expected}) < len(expected)
    consumer = start_consumer(
        "--sink", "csv", "--topic", relay.topic,
        group="e2e-csv",
        env={
            "AUDIT_CONSUMER_DEAD_LETTER_TOPIC": relay.dead_letter_topic,
            "AUDIT_CONSUMER_CSV_PREFIX": "###",
            "AUDIT_CONSUMER_CSV_HEADER": "true",
        },
    )  # fmt: skip

    def rows() -> list[list[str]]:
        return list(csv.reader(line[3:] for line in consumer.stdout().splitlines(keepends=True)))

    await wait_until(lambda: len(rows()) >= len(expected) + 1, timeout=60, what="every CSV row")
    assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0
    assert all(line.startswith("###") for line in consumer.stdout().splitlines())
    header, *body = rows()
    assert header[:3] == ["stageTimestamp", "level", "stage"]
    # Partitions interleave, so compare as sorted lists: every row field by field, each once.
    assert sorted(body) == sorted(original_row(e) for e in expected)
    assert "Traceback" not in consumer.stderr()
    committed, end = await committed_and_end(relay.bootstrap, "e2e-csv", relay.topic, 3)
    assert committed == end == len(publishable)


async def test_a_consumer_started_before_the_relay_waits_for_its_topic(
    start_relay: Any,
    start_consumer: StartConsumer,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    topic = unique_topic("late")
    output = tmp_path / "audit.jsonl"
    consumer = start_consumer("--sink", "jsonl", "--topic", topic, "--output", str(output))
    await wait_until(
        lambda: f"waiting for topic {topic}" in consumer.stderr(), timeout=30, what="waiting"
    )
    # Had the consumer subscribed, the broker would have made the topic with one partition.
    relay = await start_relay("--topic", topic, "--dead-letter-topic", f"{topic}.dead-letter")
    events = with_fresh_ids(30)
    async with http.post(relay.url, data=event_list(events)) as response:
        assert response.status == 200
    await wait_until(lambda: len(jsonl_ids(output)) >= 30, timeout=30, what="every event")
    assert Counter(jsonl_ids(output)) == Counter(e["auditID"] for e in events)
    assert assigned_partitions(consumer) == {0, 1, 2}  # the relay's --partitions 3
    assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0


async def test_two_replicas_write_every_event_exactly_once_between_them(
    kafka_bootstrap: str, new_topic: Any, start_consumer: StartConsumer, tmp_path: Path
) -> None:
    topic = await new_topic(4)
    outputs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    flags = ["--sink", "jsonl", "--topic", topic, "--session-timeout", "6"]
    a, b = (start_consumer(*flags, "--output", str(output), group="replicas") for output in outputs)
    await wait_until(
        lambda: (
            assigned_partitions(a) | assigned_partitions(b) == {0, 1, 2, 3}
            and bool(assigned_partitions(a))
            and bool(assigned_partitions(b))
        ),
        timeout=40,
        what="the partitions split between both replicas",
    )
    events = with_fresh_ids(600)
    await produce_events(kafka_bootstrap, topic, events[:300])
    await wait_until(lambda: len(jsonl_ids(*outputs)) >= 300, timeout=30, what="first half")
    assert all(jsonl_ids(output) for output in outputs), "both replicas wrote"
    # One replica leaves mid-stream; the other takes its partitions from its last commit.
    assert wait_for_exit_or_fail(b, signal.SIGTERM, 20) == 0
    await produce_events(kafka_bootstrap, topic, events[300:])
    await wait_until(lambda: len(jsonl_ids(*outputs)) >= 600, timeout=40, what="second half")
    counts = Counter(jsonl_ids(*outputs))
    assert counts == Counter(e["auditID"] for e in events), "each event exactly once"
    assert wait_for_exit_or_fail(a, signal.SIGTERM, 20) == 0


async def test_a_replica_joining_mid_stream_loses_nothing(
    kafka_bootstrap: str, new_topic: Any, start_consumer: StartConsumer, tmp_path: Path
) -> None:
    topic = await new_topic(4)
    outputs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    flags = ["--sink", "jsonl", "--topic", topic, "--max-batch", "20", "--dedupe-window", "0"]
    flags += ["--session-timeout", "6"]
    a = start_consumer(*flags, "--output", str(outputs[0]), group="joined")
    events = with_fresh_ids(100)
    await produce_events(kafka_bootstrap, topic, events)
    await wait_until(lambda: len(jsonl_ids(outputs[0])) >= 50, timeout=30, what="a under way")
    b = start_consumer(*flags, "--output", str(outputs[1]), group="joined")
    # Keep events flowing while b joins and the partitions move, and for a while after.
    chunks_after_join = 0
    while chunks_after_join < 10:
        assert len(events) < 30000, "b never got partitions"
        chunk = with_fresh_ids(100)
        await produce_events(kafka_bootstrap, topic, chunk)
        events += chunk
        chunks_after_join += 1 if assigned_partitions(b) else 0
    expected = {e["auditID"] for e in events}
    await wait_until(lambda: set(jsonl_ids(*outputs)) >= expected, timeout=60, what="all events")
    counts = Counter(jsonl_ids(*outputs))
    duplicates = sum(n - 1 for n in counts.values())
    a_wrote, b_wrote = (len(jsonl_ids(output)) for output in outputs)
    print(f"\njoin mid-stream: a wrote {a_wrote}, b {b_wrote}, {duplicates} duplicates")
    assert set(counts) == expected
    assert b_wrote > 0
    assert wait_for_exit_or_fail(a, signal.SIGTERM, 20) == 0
    assert wait_for_exit_or_fail(b, signal.SIGTERM, 20) == 0


async def test_sigkill_mid_stream_then_restart_loses_nothing(
    kafka_bootstrap: str, new_topic: Any, start_consumer: StartConsumer, tmp_path: Path
) -> None:
    topic = await new_topic(3)
    output = tmp_path / "audit.jsonl"
    flags = [
        "--sink", "jsonl", "--topic", topic, "--output", str(output),
        "--rotate-bytes", "500000", "--keep", "1000", "--max-batch", "50",
        "--session-timeout", "6",
    ]  # fmt: skip
    events = with_fresh_ids(4000)
    first = start_consumer(*flags, group="killed")
    await produce_events(kafka_bootstrap, topic, events[:2000])
    await wait_until(lambda: len(jsonl_ids(output)) >= 200, timeout=30, what="some written")
    first.signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    written_before_kill = len(jsonl_ids(output))
    await produce_events(kafka_bootstrap, topic, events[2000:])
    second = start_consumer(*flags, group="killed")
    expected = {e["auditID"] for e in events}
    await wait_until(
        lambda: set(jsonl_ids(output)) >= expected, timeout=60, what="every event after restart"
    )
    assert wait_for_exit_or_fail(second, signal.SIGTERM, 20) == 0
    ids = jsonl_ids(output)
    duplicates = {audit_id: n for audit_id, n in Counter(ids).items() if n > 1}
    print(
        f"\nSIGKILL after {written_before_kill} of {len(events)} written: "
        f"{len(ids)} lines, {len(duplicates)} events written twice or more: "
        f"{sorted(duplicates)[:10]}{' ...' if len(duplicates) > 10 else ''}"
    )
    assert set(ids) == expected
    assert len(ids) == len(expected) + sum(n - 1 for n in duplicates.values())


async def test_sigterm_mid_stream_commits_exactly_what_was_written(
    kafka_bootstrap: str, new_topic: Any, start_consumer: StartConsumer, tmp_path: Path
) -> None:
    topic = await new_topic(3)
    output = tmp_path / "audit.jsonl"
    flags = ["--sink", "jsonl", "--topic", topic, "--output", str(output), "--max-batch", "20"]
    consumer = start_consumer(*flags, group="drained")
    await produce_events(kafka_bootstrap, topic, with_fresh_ids(3000))
    await wait_until(lambda: len(jsonl_ids(output)) >= 100, timeout=30, what="some written")
    assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0
    written = jsonl_ids(output)
    committed, end = await committed_and_end(kafka_bootstrap, "drained", topic, 3)
    print(f"\nSIGTERM mid-stream: {len(written)} of {end} written and committed")
    assert len(set(written)) == len(written)
    assert committed == len(written)


async def test_metrics_and_healthz(
    kafka_bootstrap: str,
    new_topic: Any,
    start_consumer: StartConsumer,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    topic = await new_topic(2)
    port = unused_port()
    consumer = start_consumer(
        "--sink", "jsonl", "--topic", topic, "--output", str(tmp_path / "out.jsonl"),
        "--exclude", "verb=delete", "--metrics-listen", f"127.0.0.1:{port}",
    )  # fmt: skip
    # The events, and three of them again byte for byte, as a re-sent batch brings them.
    repeats = [e for e in audit_events() if e.get("verb") != "delete"][:3]
    events = audit_events() + repeats
    await produce_events(kafka_bootstrap, topic, events)
    deletes = sum(1 for e in events if e.get("verb") == "delete")
    base = f"http://127.0.0.1:{port}"

    async def metrics() -> str:
        try:
            async with http.get(f"{base}/metrics") as response:
                return await response.text()
        except aiohttp.ClientConnectionError:
            return ""

    async def consumed_all() -> bool:
        return f"audit_consumer_events_consumed_total {float(len(events))}" in await metrics()

    async def no_lag() -> bool:
        # Offsets are committed beside the next poll, so the lag reaches 0 just after.
        lags = re.findall(
            rf'audit_consumer_lag{{partition="\d",topic="{topic}"}} 0.0', await metrics()
        )
        return len(lags) == 2

    await wait_until(consumed_all, timeout=30, what="every event counted")
    await wait_until(no_lag, timeout=10, what="a lag of 0 on both partitions")
    text = await metrics()
    assert f"audit_consumer_events_filtered_total {float(deletes)}" in text
    assert f"audit_consumer_events_deduplicated_total {float(len(repeats))}" in text
    written = len(events) - deletes - len(repeats)
    assert f"audit_consumer_events_written_total {float(written)}" in text
    assert "audit_consumer_events_dead_lettered_total 0.0" in text
    assert "audit_consumer_sink_write_seconds_count" in text
    async with http.get(f"{base}/healthz") as response:
        assert response.status == 200
    assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0


def run_cli(processes: ProcessFactory, *args: str, env: dict[str, str] | None = None) -> Process:
    process = processes.start("consumers", *args, env=env)
    process.wait(30)
    return process


def test_help_lists_every_flag_with_its_environment_variable(processes: ProcessFactory) -> None:
    process = run_cli(processes, "--help")
    assert process.popen.returncode == 0
    text = process.stdout()
    for flag in ("--sink", "--group", "--include", "--exclude", "--dedupe-window",
                 "--metrics-listen", "--output", "--rotate-bytes", "--keep", "--csv-columns",
                 "--csv-missing", "--csv-prefix", "--csv-header", "--kafka-bootstrap"):  # fmt: skip
        assert flag in text, flag
    assert "AUDIT_CONSUMER_CSV_COLUMNS" in text
    assert "impersonatedUser" in text


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "audit-consumer"
    assert script.exists()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {}, "--sink is required"),
        (("--sink", "nope"), {}, "invalid choice: 'nope'"),
        (("--sink", "csv", "--csv-columns", "verb,colour"), {}, "unknown column(s) colour"),
        (("--sink", "csv", "--include", "colour=red"), {}, "FIELD=GLOB"),
        (("--sink", "jsonl", "--rotate-bytes", "10"), {}, "--rotate-bytes needs --output"),
        (
            (
                "--sink",
                "csv",
            ),
            {"AUDIT_CONSUMER_MAX_BATCH": "0"},
            "must be at least 1",
        ),
        (("--sink", "csv", "--metrics-listen", "nowhere"), {}, "expected HOST:PORT"),
    ],
)
def test_bad_flags_exit_2_with_a_message(
    processes: ProcessFactory, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    process = run_cli(processes, *args, env=env)
    assert process.popen.returncode == 2
    assert message in process.stderr()
    assert "Traceback" not in process.stderr()
    assert process.stdout() == ""


def test_unreachable_kafka_exits_1_with_a_message(processes: ProcessFactory) -> None:
    bootstrap = f"127.0.0.1:{unused_port()}"
    process = run_cli(processes, "--sink", "csv", "--kafka-bootstrap", bootstrap)
    assert process.popen.returncode == 1
    assert f"cannot reach Kafka at {bootstrap}" in process.stderr()
    assert "Traceback" not in process.stderr()


async def test_a_session_timeout_the_broker_refuses_exits_2_with_a_message(
    processes: ProcessFactory, kafka_bootstrap: str, new_topic: Any
) -> None:
    topic = await new_topic(1)
    process = run_cli(
        processes, "--sink", "csv", "--kafka-bootstrap", kafka_bootstrap, "--topic", topic,
        "--session-timeout", "1",
    )  # fmt: skip
    assert process.popen.returncode == 2
    assert "--session-timeout 1.0: the broker refuses it" in process.stderr()
    assert "Traceback" not in process.stderr()
