"""A local Kafka cluster (``deploy/local/kafka --brokers 3``) and what its metadata says."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from tests.support.kafka import LocalBroker, run_kafka_script

OFFSETS_TOPIC = "__consumer_offsets"


@dataclass(frozen=True)
class PartitionState:
    """Who leads a partition and which replicas are in sync, as the cluster's metadata says."""

    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def in_sync(self) -> bool:
        return set(self.isr) == set(self.replicas)


@dataclass
class LocalCluster:
    """``deploy/local/kafka --brokers SIZE``: combined broker+controller nodes 1..SIZE on ports
    ``port`` .. ``port + SIZE - 1`` (their controllers on the next SIZE ports); ``settings`` are
    broker settings given at every start (``--set``)."""

    port: int
    state_dir: Path
    size: int = 3
    settings: dict[str, str] = field(default_factory=dict)
    brokers: list[LocalBroker] = field(init=False)

    def __post_init__(self) -> None:
        self.brokers = [
            LocalBroker(
                self.port + index,
                self.state_dir / f"broker-{index + 1}",
                node_id=index + 1,
                script_args=(*self._args(), "--broker", str(index + 1)),
            )
            for index in range(self.size)
        ]

    def _args(self) -> tuple[str, ...]:
        sets = [arg for key, value in self.settings.items() for arg in ("--set", f"{key}={value}")]
        return (
            "--brokers", str(self.size), "--port", str(self.port),
            "--state-dir", str(self.state_dir), *sets,
        )  # fmt: skip

    @property
    def bootstrap(self) -> str:
        return ",".join(broker.bootstrap for broker in self.brokers)

    def broker(self, node_id: int) -> LocalBroker:
        return self.brokers[node_id - 1]

    def start(self) -> None:
        """Start every broker that is not running (a killed one comes back on its data)."""
        for broker in self.brokers:
            broker.resume()
        run_kafka_script("start", *self._args())

    def stop(self) -> None:
        for broker in self.brokers:
            broker.resume()
        run_kafka_script("stop", *self._args())

    def answering(self) -> str:
        """The bootstrap of the brokers that run and are not paused (a paused one never answers)."""
        live = [broker.bootstrap for broker in self.brokers if broker.running()]
        assert live, "no broker of the cluster runs"
        return ",".join(live)

    async def partitions(self, topic: str) -> dict[int, PartitionState]:
        """Each partition of ``topic``: its leader (-1: none), replicas and ISR."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.answering(), request_timeout_ms=5000)
        await admin.start()
        try:
            [description] = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return {
            p["partition"]: PartitionState(p["leader"], tuple(p["replicas"]), tuple(p["isr"]))
            for p in description["partitions"]
        }

    async def busiest_leader(self, topic: str) -> int:
        """The node that leads the partitions of ``topic`` holding the most records."""
        states = await self.partitions(topic)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.answering(), group_id=None)
        await consumer.start()
        try:
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in states])
        finally:
            await consumer.stop()
        records: Counter[int] = Counter()
        for tp, end in ends.items():
            records[states[tp.partition].leader] += end
        return records.most_common(1)[0][0]

    async def wait_in_sync(self, topics: list[str], timeout: float = 60) -> float:
        """Wait until every partition of ``topics`` has a leader and all its replicas in sync;
        the seconds that took. Fails the test after ``timeout``."""
        return await self._wait_partitions(
            topics, lambda s: s.in_sync and s.leader >= 0, "replicas all in sync", timeout
        )

    async def wait_writable(self, topics: list[str], min_insync: int, timeout: float) -> float:
        """Wait until every partition of ``topics`` has a running leader and ``min_insync`` of
        its in-sync replicas running (acks=all can be answered); the seconds that took."""
        running = {broker.node_id for broker in self.brokers if broker.running()}
        return await self._wait_partitions(
            topics,
            lambda s: s.leader in running and len(running & set(s.isr)) >= min_insync,
            f"{min_insync} running replicas in sync",
            timeout,
        )

    async def _wait_partitions(
        self,
        topics: list[str],
        ready: Callable[[PartitionState], bool],
        what: str,
        timeout: float,
    ) -> float:
        started = time.monotonic()
        deadline = started + timeout
        while True:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                states = [s for topic in topics for s in (await self.partitions(topic)).values()]
                if states and all(ready(s) for s in states):
                    return time.monotonic() - started
            if time.monotonic() > deadline:
                raise AssertionError(f"{topics}: not {what} within {timeout}s")
            await asyncio.sleep(0.25)

    async def group_coordinator(self) -> int:
        """The node leading ``__consumer_offsets`` (one partition here): every group's
        coordinator. Asking for a group's offsets creates the topic on a fresh cluster."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.answering(), group_id="coordinator")
        await consumer.start()
        try:
            await consumer.committed(TopicPartition(OFFSETS_TOPIC, 0))
        finally:
            await consumer.stop()
        await self._wait_partitions([OFFSETS_TOPIC], lambda s: s.leader >= 0, "led", 30)
        return (await self.partitions(OFFSETS_TOPIC))[0].leader
