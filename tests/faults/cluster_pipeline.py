"""One relay's events end to end on a three-broker cluster, and what a scenario measures of it.

A ``Pipeline`` is the harness's re-posting load into a real relay (``--replication-factor 3``),
its topic, and a CSV consumer group of one replica writing ``auditID,stage`` per event to a
file. While the fault runs, a ``Watch`` samples every 0.25 s the relay's last Kafka ack and the
group's committed offsets. At the end every event is counted in Kafka and in the CSV file, and
the figures go to the run's fault table (``RESULTS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from tests.faults.harness import RESULTS, EventId, Load, Relay, Tally
from tests.support.cluster import LocalCluster
from tests.support.kafka import committed_and_end, unique_topic
from tests.support.net import wait_until
from tests.support.processes import Process, ProcessFactory

REPLICATION = ("--replication-factor", "3")
# The fault tables' header, printed once before the first cluster row.
HEADER = (
    "| cluster scenario | sent | acknowledged | delivered | duplicated in Kafka | CSV written "
    "| CSV repeats | non-200 answers | longest request s | longest without a Kafka ack s "
    "| fault end to first ack s | records resent | producers replaced | events spooled "
    "| longest without a commit s | scenario s |"
)


class CsvGroup:
    """``python -m consumers --sink csv`` reading one topic in a group of its own."""

    def __init__(self, processes: ProcessFactory, bootstrap: str, topic: str, output: Path):
        self.processes = processes
        self.bootstrap = bootstrap
        self.topic = topic
        self.output = output
        self.group = f"{topic}-csv"
        self.process: Process | None = None

    def start(self) -> None:
        self.process = self.processes.start(
            "consumers",
            "--sink", "csv", "--csv-columns", "auditID,stage", "--output", str(self.output),
            "--kafka-bootstrap", self.bootstrap, "--topic", self.topic, "--group", self.group,
            "--dead-letter-topic", f"{self.topic}.dead-letter", "--session-timeout", "6",
        )  # fmt: skip

    def written(self) -> Counter[EventId]:
        """Each event the CSV file holds, with the times it was written."""
        with self.output.open(newline="") as rows:
            return Counter((row[0], row[1]) for row in csv.reader(rows))

    async def wait_committed(self, partitions: int, timeout: float) -> int:
        """Wait until the group committed every record of the topic; their number."""
        totals = (0, -1)

        async def all_committed() -> bool:
            nonlocal totals
            assert self.process is not None and self.process.popen.poll() is None, (
                f"CSV consumer exited:\n{self.process and self.process.stderr()[-3000:]}"
            )
            totals = await committed_and_end(self.bootstrap, self.group, self.topic, partitions)
            return totals[0] == totals[1]

        await wait_until(all_committed, timeout=timeout, interval=1, what="every offset committed")
        return totals[1]


@dataclass
class Watch:
    """The longest time without a Kafka ack (relay) and without a commit (group) while sampled."""

    relay: Relay
    http: aiohttp.ClientSession
    group: CsvGroup
    answering: Callable[[], str]
    without_ack_s: float = 0.0
    without_commit_s: float = 0.0
    commits: list[tuple[float, int]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> None:
        """Stop sampling. A flag, not a cancel: aiokafka may swallow a cancellation while
        connecting, and the sampling would then go on for ever."""
        assert self._task is not None
        self._stopping.set()
        _, pending = await asyncio.wait([self._task], timeout=10)
        for task in pending:
            task.cancel()

    def committed_since(self, since: float) -> bool:
        """Whether the group's committed offsets grew after the Unix time ``since``."""
        before = [count for at, count in self.commits if at <= since]
        after = [count for at, count in self.commits if at > since]
        return bool(after) and max(after) > max(before, default=0)

    async def _sample(self) -> None:
        last_progress = time.time()
        while not self._stopping.is_set():
            now = time.time()
            with contextlib.suppress(aiohttp.ClientError, KeyError):
                last_ack = (await self.relay.metrics(self.http))[
                    "relay_kafka_last_ack_timestamp_seconds"
                ]
                if last_ack:
                    self.without_ack_s = max(self.without_ack_s, now - last_ack)
            committed = await self._committed()
            if committed is not None:
                if committed > max((c for _, c in self.commits), default=0):
                    last_progress = now
                self.commits.append((now, committed))
            if self.commits:
                self.without_commit_s = max(self.without_commit_s, now - last_progress)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.25)

    async def _committed(self) -> int | None:
        """The group's committed offsets summed, or None when Kafka does not answer in 2 s."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.answering(), request_timeout_ms=2000)
        try:
            async with asyncio.timeout(2):
                await admin.start()
                offsets = await admin.list_consumer_group_offsets(self.group.group)
                return sum(meta.offset for meta in offsets.values() if meta.offset > 0)
        except (KafkaError, OSError, TimeoutError, AssertionError):
            return None
        finally:
            await admin.close()


class Pipeline:
    """Load -> relay -> topic -> CSV group, for one scenario (``spool``: the relay's spool;
    ``relay_args``: flags of the relay's after the harness's own, which they override)."""

    def __init__(
        self,
        scenario: str,
        cluster: LocalCluster,
        processes: ProcessFactory,
        http: aiohttp.ClientSession,
        directory: Path,
        *,
        spool: bool = True,
        relay_args: Sequence[str] = (),
    ) -> None:
        self.cluster = cluster
        self.relay_args = relay_args
        self.http = http
        spool_dir = directory / unique_topic("spool") if spool else None
        self.relay = Relay(processes, cluster.bootstrap, spool_dir)
        self.tally = Tally(scenario)
        self.load = Load(http, self.relay.url, self.tally)
        self.group = CsvGroup(
            processes, cluster.bootstrap, self.relay.topic, directory / f"{self.relay.topic}.csv"
        )
        self.watch = Watch(self.relay, http, self.group, cluster.answering)
        self.started = time.monotonic()
        self.first_ack_s: list[float] = []
        self.metrics: dict[str, float] = {}  # the relay's, read by ``finish``

    @property
    def topics(self) -> list[str]:
        return [self.relay.topic, f"{self.relay.topic}.dead-letter"]

    async def start(self) -> None:
        """Relay connected (its topics created), its consumer group and load running."""
        await self.relay.start(self.http, *REPLICATION, *self.relay_args)
        # Ready with a spool means taking requests, not connected: what the load sends before
        # the first producer is in place would count as spooled by the fault.
        await self.relay.wait_kafka_connected(self.http, True, timeout=30)
        self.group.start()
        self.load.start()
        self.watch.start()
        await wait_until(
            lambda: len(self.tally.acknowledged) > 0 and self.watch.committed_since(0),
            timeout=60,
            interval=0.25,
            what="a first acknowledgement and a first commit of the group",
        )

    async def fault_ended(self, at: float, within: float = 90) -> float:
        """Seconds from the fault's end (Unix time ``at``) to the relay's next Kafka ack."""
        seconds = await self.relay.wait_acknowledged_since(self.http, at, within)
        self.first_ack_s.append(seconds)
        return seconds

    async def finish(self) -> None:
        """Stop the load, count every event in Kafka and in the CSV file, assert, record."""
        await self.watch.stop()  # no acks or commits are due once no new batch comes
        await self.load.finish()
        if self.relay.spool_dir is not None:
            await self.relay.wait_drained(self.http, timeout=90)
        await self.tally.read_delivered(self.cluster.bootstrap, self.relay.topic)
        await self.group.wait_committed(3, timeout=90)
        written = self.group.written()
        metrics = self.metrics = await self.relay.metrics(self.http)
        tally = self.tally
        first_ack = max(self.first_ack_s, default=0.0)
        if HEADER not in RESULTS:
            RESULTS.append(HEADER)
        RESULTS.append(
            f"| {tally.scenario} | {tally.row()} | {len(written)} "
            f"| {sum(written.values()) - len(written)} | {len(tally.refused_at)} "
            f"| {tally.longest_s:.1f} | {self.watch.without_ack_s:.1f} | {first_ack:.1f} "
            f"| {metrics['relay_records_resent_total']:.0f} "
            f"| {metrics['relay_kafka_producer_restarts_total']:.0f} "
            f"| {metrics['relay_events_spooled_total']:.0f} "
            f"| {self.watch.without_commit_s:.1f} | {time.monotonic() - self.started:.0f} |"
        )
        tally.check()
        assert tally.acknowledged == tally.sent, "every batch was acknowledged in the end"
        lost = tally.acknowledged - written.keys()
        assert not lost, f"{len(lost)} acknowledged events never written, e.g. {sorted(lost)[:3]}"
        assert written.keys() <= tally.sent, "the CSV holds events that were never sent"
