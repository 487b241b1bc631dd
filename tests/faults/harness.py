"""Fault-test harness: a real relay process, a steady bounded load, and counting at the far end.

The load posts EventLists of tests.support.events, each event with an auditID of its own, at a
fixed rate, and re-posts a batch that was not answered 200, as kube-apiserver does. The tally counts
every event by (auditID, stage): sent, acknowledged (its batch got a 200), and delivered (read
back from the topic), and the duplicates among the delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.support.events import audit_events, event_list
from tests.support.kafka import read_topic, topic_size, unique_topic
from tests.support.net import unused_port, wait_until
from tests.support.processes import Process, ProcessFactory

EventId = tuple[str, str]
# Rows of the README table from this run; tests/faults/conftest.py prints them at the end.
RESULTS: list[str] = []


class Relay:
    """``python -m relay`` on a fixed port so that it can be killed and restarted; with a spool
    unless ``spool_dir`` is None."""

    def __init__(self, processes: ProcessFactory, bootstrap: str, spool_dir: Path | None) -> None:
        self.processes = processes
        self.bootstrap = bootstrap
        self.spool_dir = spool_dir
        self.port = unused_port()
        self.topic = unique_topic("faults")
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/api/audits?timeout=30s"
        self.process: Process | None = None

    async def start(self, http: aiohttp.ClientSession, *args: str) -> Process:
        process = self.processes.start(
            "relay",
            "--insecure",
            "--listen", f"127.0.0.1:{self.port}",
            "--kafka-bootstrap", self.bootstrap,
            "--topic", self.topic,
            "--dead-letter-topic", f"{self.topic}.dead-letter",
            "--partitions", "3",
            "--ack-timeout", "3",
            *(["--spool-dir", str(self.spool_dir)] if self.spool_dir else []),
            *args,
        )  # fmt: skip
        self.process = process

        async def ready() -> bool:
            assert process.popen.poll() is None, f"relay exited:\n{process.stderr()[-3000:]}"
            try:
                async with http.get(f"{self.base}/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_until(ready, timeout=30, what="relay /readyz")
        return process

    def kill(self) -> None:
        """SIGKILL the relay and every worker it spawned, as a node crash would."""
        assert self.process is not None
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)
        self.process.signal(signal.SIGKILL)
        self.process.wait(10)

    async def metrics(self, http: aiohttp.ClientSession) -> dict[str, float]:
        async with http.get(f"{self.base}/metrics") as response:
            text = await response.text()
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    async def wait_drained(self, http: aiohttp.ClientSession, timeout: float = 60) -> None:
        """Wait until the spool is empty and Kafka is up again."""

        async def drained() -> bool:
            values = await self.metrics(http)
            return values["relay_spool_events"] == 0 and values["relay_kafka_up"] == 1

        await wait_until(drained, timeout=timeout, interval=0.5, what="spool drained into Kafka")

    async def wait_kafka_connected(
        self, http: aiohttp.ClientSession, connected: bool, timeout: float
    ) -> None:
        async def reached() -> bool:
            values = await self.metrics(http)
            return values["relay_kafka_connected"] == (1 if connected else 0)

        await wait_until(reached, timeout=timeout, interval=0.2, what=f"connected={connected}")

    async def wait_acknowledged_since(
        self, http: aiohttp.ClientSession, since: float, timeout: float
    ) -> float:
        """Wait until every worker had a request acknowledged by Kafka after the Unix time
        ``since``; the seconds that took."""

        async def acknowledged() -> bool:
            values = await self.metrics(http)
            return values["relay_kafka_last_ack_timestamp_seconds"] > since

        await wait_until(acknowledged, timeout=timeout, interval=0.2, what="a Kafka ack")
        return time.time() - since


@dataclass
class Tally:
    """What one scenario sent, got acknowledged and found in Kafka."""

    scenario: str
    sent: set[EventId] = field(default_factory=set)
    acknowledged: set[EventId] = field(default_factory=set)
    delivered: Counter[EventId] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    # Seconds of the slowest request attempt, and the Unix times of the answers that were not 200.
    longest_s: float = 0.0
    refused_at: list[float] = field(default_factory=list)

    @property
    def duplicated(self) -> int:
        return sum(count - 1 for count in self.delivered.values())

    async def read_delivered(self, bootstrap: str, topic: str) -> None:
        size = await topic_size(bootstrap, topic)
        records = await read_topic(bootstrap, topic, size, timeout=60)
        self.delivered = Counter(
            (value["auditID"], value["stage"])
            for value in (orjson.loads(record.value) for record in records)
        )

    def check(self) -> None:
        """Assert nothing acknowledged is missing and nothing unknown arrived; print the row."""
        RESULTS.append(f"| {self.scenario} | {self.row()} | {dict(sorted(self.answers.items()))} |")
        missing = self.acknowledged - self.delivered.keys()
        assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
        unknown = self.delivered.keys() - self.sent
        assert not unknown, f"{len(unknown)} events delivered that were never sent"

    def row(self) -> str:
        delivered = len(self.delivered)
        return f"{len(self.sent)} | {len(self.acknowledged)} | {delivered} | {self.duplicated}"


class Load:
    """Posts ``batch_size`` events every ``1 / batches_per_s`` seconds until ``finish``."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        tally: Tally,
        *,
        batches_per_s: float = 10,
        batch_size: int = 20,
        retry: bool = True,
    ) -> None:
        self.http = http
        self.url = url
        self.tally = tally
        self.interval = 1 / batches_per_s
        self.batch_size = batch_size
        self.retry = retry
        self.events = audit_events()
        self.batches = 0
        self._stopping = asyncio.Event()
        self._posters: set[asyncio.Task[None]] = set()
        self._producer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._producer = asyncio.create_task(self._produce())

    async def finish(self, retry_for: float = 60) -> None:
        """Stop making batches; let the ones not yet acknowledged retry for up to ``retry_for``."""
        self._stopping.set()
        assert self._producer is not None
        await self._producer
        if self._posters:
            _, pending = await asyncio.wait(self._posters, timeout=retry_for)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _produce(self) -> None:
        next_at = time.monotonic()
        while not self._stopping.is_set():
            task = asyncio.create_task(self._post(self._batch()))
            self._posters.add(task)
            task.add_done_callback(self._posters.discard)
            next_at += self.interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(0, next_at - time.monotonic()))

    def _batch(self) -> list[dict[str, Any]]:
        number = self.batches
        self.batches += 1
        items = []
        for index in range(self.batch_size):
            event = self.events[(number * self.batch_size + index) % len(self.events)]
            items.append({**event, "auditID": f"{self.tally.scenario}-{number:06d}-{index:03d}"})
        self.tally.sent.update((item["auditID"], item["stage"]) for item in items)
        return items

    async def _post(self, items: list[dict[str, Any]]) -> None:
        body = event_list(items)
        while True:
            started = time.monotonic()
            try:
                async with self.http.post(self.url, data=body) as response:
                    status = response.status
                    retry_after = float(response.headers.get("Retry-After", "1"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, retry_after = 0, 1.0
                self.tally.answers[type(exc).__name__] += 1
            self.tally.longest_s = max(self.tally.longest_s, time.monotonic() - started)
            if status:
                self.tally.answers[str(status)] += 1
            if status != 200:
                self.tally.refused_at.append(time.time())
            if status == 200:
                self.tally.acknowledged.update((item["auditID"], item["stage"]) for item in items)
                return
            if not self.retry:
                return
            await asyncio.sleep(retry_after)
