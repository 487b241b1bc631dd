"""``audit-source`` as a real process, for the tests of each source."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

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


async def read_each_event(
    bootstrap: str, topic: str, lines: list[bytes], *, timeout: float
) -> Counter[tuple[str, str]]:
    """How many times each event (``identity``) is in ``topic`` once every one of ``lines`` is
    there: after a crash some are there twice, so a count of records alone would end early."""
    expected = set(map(identity, lines))
    read: Counter[tuple[str, str]] = Counter()

    async def all_there() -> bool:
        nonlocal read
        size = await topic_size(bootstrap, topic)
        if size < len(expected):
            return False
        records = await read_topic(bootstrap, topic, size)
        read = Counter(identity(record.value) for record in records)
        return expected <= read.keys()

    await wait_until(all_there, timeout=timeout, what=f"each of {len(expected)} events in {topic}")
    return read
