"""``--sink csv`` killed with SIGKILL in the middle of writing rows whose names hold line feeds,
carriage returns and quotes: after a restart every row parses with the csv module, and no event
is lost (repeats are allowed: delivery is at least once)."""

from __future__ import annotations

import csv
import signal
import uuid
from pathlib import Path
from typing import Any

from audit_common.samples import sample_events
from tests.consumers.conftest import StartConsumer
from tests.consumers.messages import produce_events
from tests.support.kafka import committed_and_end, create_topic, unique_topic
from tests.support.net import wait_until
from tests.support.processes import Process, wait_for_exit_or_fail

COUNT = 3000


def awkward_events() -> list[dict[str, Any]]:
    """Events whose object names hold \\n, \\r, \\r\\n and quotes (the apiserver percent-decodes
    names), long enough that the rows take a while to write."""
    events = sample_events(COUNT)
    for index, event in enumerate(events):
        event["auditID"] = str(uuid.uuid4())
        ref = event.setdefault("objectRef", {})
        ref["name"] = f'n{index}\n"quoted"\rline\r\n' + "x" * 500 + '"'
    return events


def rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


async def test_sigkill_mid_write_leaves_only_whole_rows_and_loses_none(
    kafka_bootstrap: str, start_consumer: StartConsumer, tmp_path: Path
) -> None:
    topic = unique_topic()
    await create_topic(kafka_bootstrap, topic, 1)
    events = awkward_events()
    await produce_events(kafka_bootstrap, topic, events)
    output = tmp_path / "audit.csv"
    group = f"csv-{uuid.uuid4().hex[:8]}"

    def start() -> Process:
        return start_consumer(
            "--sink", "csv", "--topic", topic, "--output", str(output),
            "--csv-columns", "auditID,name", "--max-batch", "20", group=group,
        )  # fmt: skip

    consumer = start()
    await wait_until(
        lambda: output.exists() and output.stat().st_size > 200_000,
        timeout=60,
        what="rows being written",
    )
    consumer.signal(signal.SIGKILL)
    consumer.popen.wait(10)
    # What a write cut short by the kill leaves, at worst: a row torn right after a line feed
    # inside its quoted name (cutting by lines would keep that half row).
    data = output.read_bytes()
    torn = data.rfind(b'\n""quoted')
    assert torn > 0
    output.write_bytes(data[: torn + 1])

    restarted = start()

    async def caught_up() -> bool:
        assert restarted.popen.poll() is None, restarted.stderr()[-3000:]
        return await committed_and_end(kafka_bootstrap, group, topic, 1) == (COUNT, COUNT)

    await wait_until(caught_up, timeout=120, interval=0.5, what="every event committed")
    assert wait_for_exit_or_fail(restarted, signal.SIGTERM, 20) == 0
    parsed = rows(output)
    expected = {event["auditID"]: event["objectRef"]["name"] for event in events}
    assert all(len(row) == 2 and expected[row[0]] == row[1] for row in parsed)
    assert {row[0] for row in parsed} == set(expected)
