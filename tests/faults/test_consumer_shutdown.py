"""A consumer is stopped while the broker is down: it exits within --shutdown-grace, loses nothing.

aiokafka retries an unreachable coordinator without end, at commit as at stop; without the
grace a SIGTERM during a Kafka outage left the consumer hanging until the orchestrator's SIGKILL.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import termios
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from tests.consumers.messages import produce_events, with_fresh_ids
from tests.support.kafka import LocalBroker, committed_and_end, create_topic, unique_topic
from tests.support.net import wait_until
from tests.support.processes import ProcessFactory, wait_for_exit_or_fail

pytestmark = pytest.mark.integration

GRACE = 3
# Time beyond the grace for the last poll to return and the process to exit.
EXIT_MARGIN = 15


def consumer_flags(broker: LocalBroker, topic: str, group: str) -> list[str]:
    return [
        "--sink", "jsonl", "--kafka-bootstrap", broker.bootstrap, "--topic", topic,
        "--group", group, "--shutdown-grace", str(GRACE), "--session-timeout", "6",
    ]  # fmt: skip


def audit_ids(data: bytes) -> list[str]:
    return [orjson.loads(line)["auditID"] for line in data.splitlines()]


class PipeReader:
    """The read end of a consumer's stdout, read only when the test says so."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self.data = b""

    def full(self) -> bool:
        buffered = bytearray(4)
        fcntl.ioctl(self.fd, termios.FIONREAD, buffered)
        return int.from_bytes(buffered, sys.byteorder) >= fcntl.fcntl(self.fd, fcntl.F_GETPIPE_SZ)

    def drain(self) -> int:
        """Read what the pipe holds; return the number of whole lines read so far."""
        while True:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.data += chunk
        return self.data.count(b"\n")


@contextmanager
def consumer_writing_to_a_pipe(args: list[str], stderr: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m consumers` with its stdout on a pipe the test reads; killed if still running."""
    with stderr.open("wb") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "consumers", *args],
            stdout=subprocess.PIPE,
            stderr=errors,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(10)
            assert process.stdout is not None
            process.stdout.close()


async def test_sigterm_with_the_broker_down_and_everything_committed_exits_0(
    broker_factory: Callable[[], LocalBroker], processes: ProcessFactory, tmp_path: Path
) -> None:
    broker = broker_factory()
    topic = unique_topic()
    await create_topic(broker.bootstrap, topic, 2)
    await produce_events(broker.bootstrap, topic, with_fresh_ids(200))
    output = tmp_path / "audit.jsonl"
    flags = consumer_flags(broker, topic, "committed")
    consumer = processes.start("consumers", *flags, "--output", str(output))

    async def all_committed() -> bool:
        return await committed_and_end(broker.bootstrap, "committed", topic, 2) == (200, 200)

    await wait_until(all_committed, timeout=60, what="every offset committed")
    broker.kill()
    assert wait_for_exit_or_fail(consumer, signal.SIGTERM, GRACE + EXIT_MARGIN) == 0
    assert len(audit_ids(output.read_bytes())) == 200
    assert "Traceback" not in consumer.stderr()


@pytest.mark.timeout(180)
async def test_sigterm_with_the_broker_down_and_offsets_uncommitted_exits_1_and_they_come_again(
    broker_factory: Callable[[], LocalBroker], processes: ProcessFactory, tmp_path: Path
) -> None:
    broker = broker_factory()
    topic = unique_topic()
    await create_topic(broker.bootstrap, topic, 1)
    events = with_fresh_ids(600)  # several MB of JSON lines: far more than a pipe holds
    await produce_events(broker.bootstrap, topic, events)
    flags = consumer_flags(broker, topic, "uncommitted")
    with consumer_writing_to_a_pipe(flags, tmp_path / "first.stderr") as first:
        assert first.stdout is not None
        pipe = PipeReader(first.stdout.fileno())
        # A full pipe holds the sink's write, so the batch in hand is neither flushed nor
        # committed when the broker dies.
        await wait_until(pipe.full, timeout=60, what="the consumer's stdout pipe full")
        broker.kill()
        first.send_signal(signal.SIGTERM)
        await wait_until(
            lambda: pipe.drain() >= 0 and first.poll() is not None,
            timeout=GRACE + EXIT_MARGIN,
            what="the consumer's exit after SIGTERM",
        )
        pipe.drain()
        assert first.returncode == 1
    stderr = (tmp_path / "first.stderr").read_text()
    assert f"could not commit offsets within --shutdown-grace {GRACE} s" in stderr
    written = audit_ids(pipe.data)
    assert written == [e["auditID"] for e in events[: len(written)]]

    await asyncio.to_thread(broker.start)
    committed, end = await committed_and_end(broker.bootstrap, "uncommitted", topic, 1)
    # The batch the full pipe held was written once SIGTERM let it finish, never committed.
    assert committed < len(written)
    assert end == len(events)
    output = tmp_path / "second.jsonl"
    second = processes.start("consumers", *flags, "--output", str(output))
    await wait_until(
        lambda: output.exists() and output.read_bytes().count(b"\n") >= end - committed,
        timeout=60,
        what="the uncommitted events consumed again",
    )
    assert wait_for_exit_or_fail(second, signal.SIGTERM, 20) == 0
    print(
        f"\nSIGTERM with the broker down: {len(written)} of {end} written, "
        f"{end - committed} uncommitted and consumed again"
    )
    assert audit_ids(output.read_bytes()) == [e["auditID"] for e in events[committed:]]
    assert await committed_and_end(broker.bootstrap, "uncommitted", topic, 1) == (end, end)
