"""``audit-source`` as a real process, for the tests of each source."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.audit_log import identity
from tests.support.kafka import read_topic, topic_size
from tests.support.net import unused_port, wait_until
from tests.support.processes import Process, ProcessFactory


class SourceProcess:
    """One ``audit-source KIND`` process publishing to ``topic`` (dead letters to
    ``topic.dead``) with cluster ``edge-1``, and its /metrics."""

    def __init__(
        self,
        processes: ProcessFactory,
        bootstrap: str,
        topic: str,
        checkpoints: Path,
        *args: str,
        env: dict[str, str] | None = None,
    ) -> None:
        """``args``: the kind and its flags; any flag here may be given again in them (later
        wins)."""
        self.port = unused_port()
        self.process: Process = processes.start(
            "relay.sources.cli",
            args[0],
            "--checkpoint-dir",
            str(checkpoints),
            "--kafka-bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--dead-letter-topic",
            f"{topic}.dead",
            "--partitions",
            "2",
            "--cluster",
            "edge-1",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--poll-interval",
            "0.05",
            *args[1:],
            env=env,
        )

    async def status(self, path: str) -> int:
        """The HTTP status of ``path`` (/healthz, /readyz) on the source's --listen."""
        url = f"http://127.0.0.1:{self.port}{path}"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status

    async def metric(self, name: str) -> float:
        """A metric's value (0 when not there yet or the process does not answer)."""
        try:
            url = f"http://127.0.0.1:{self.port}/metrics"
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                text = await response.text()
        except aiohttp.ClientError:
            return 0.0
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0


def csv_consumer(
    processes: ProcessFactory, bootstrap: str, topic: str, output: Path, columns: str
) -> Callable[[], list[list[str]]]:
    """Start a CSV consumer group (``audit-consumer --sink csv``) on ``topic`` writing
    ``output`` with ``columns``; return what reads its rows so far (the header left out)."""
    processes.start(
        "consumers", "--sink", "csv", "--kafka-bootstrap", bootstrap, "--group", f"g-{topic}",
        "--topic", topic, "--output", str(output), "--csv-columns", columns,
    )  # fmt: skip
    header = columns.split(",")

    def rows() -> list[list[str]]:
        if not output.exists():
            return []
        with output.open(newline="", encoding="utf-8") as file:
            return [row for row in csv.reader(file) if row != header]

    return rows


async def assert_through_a_csv_group(
    processes: ProcessFactory, bootstrap: str, topic: str, output: Path, lines: list[bytes]
) -> None:
    """Through a CSV consumer group unchanged: one row per event of ``lines``, each with the
    source's cluster (``edge-1``)."""
    rows = csv_consumer(processes, bootstrap, topic, output, "auditID,stage,cluster")
    await wait_until(lambda: len(rows()) >= len(lines), timeout=30, what="the CSV rows")
    assert Counter((row[0], row[1]) for row in rows()) == Counter(map(identity, lines))
    assert {row[2] for row in rows()} == {"edge-1"}


async def assert_nothing_lost_repeats_counted(
    bootstrap: str,
    topic: str,
    events: Sequence[bytes | dict[str, Any]],
    source: SourceProcess,
    *,
    timeout: float,
) -> None:
    """After a restart: every one of ``events`` (lines as the source held them, or the events
    it rebuilds) is in ``topic``, and the events there twice are no more than the restarted
    ``source`` counts as repeated."""
    expected = set(map(identity, events))
    read: Counter[tuple[str, str]] = Counter()

    async def all_there() -> bool:
        # Not a count of records: after a crash some events are there twice.
        nonlocal read
        size = await topic_size(bootstrap, topic)
        if size < len(expected):
            return False
        read = Counter(
            identity(record.value) for record in await read_topic(bootstrap, topic, size)
        )
        return expected <= read.keys()

    await wait_until(all_there, timeout=timeout, what=f"each of {len(expected)} events in {topic}")
    repeats = sum(read.values()) - len(set(read))
    assert repeats <= await source.metric("audit_source_events_repeated_total")
