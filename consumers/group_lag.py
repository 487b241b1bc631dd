"""The committed-offset lag of every consumer group on the topic, live members or not.

``audit_consumer_lag`` covers only the partitions a live member holds: a group whose every
replica crash-loops exports nothing there. This exporter asks Kafka instead (the groups, their
committed offsets, the partitions' end offsets) every ``--group-lag-interval``, so that while
any consumer of any group runs, a dead group's lag shows and grows. Every replica reports the
same values: aggregate them with ``max by (group, topic, partition)``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code

from audit_common.kafka_connection import KafkaConnection
from audit_common.resource import AsyncResource
from consumers.health import Health
from consumers.metrics import ConsumerMetrics

log = logging.getLogger(__name__)

# Bounds one refresh (aiokafka would wait for an unreachable broker up to its 40 s request
# timeout, per request); the next starts an interval after the end of the last.
REFRESH_TIMEOUT = 10.0
# Failures are logged at most this often: a refresh fails every interval while Kafka is down.
LOG_EVERY = 60.0

Committed = dict[str, dict[TopicPartition, int]]


class GroupLagExporter(AsyncResource):
    """Started and stopped by ``consumers.__main__`` beside the runner, with ``--metrics-listen``.

    Runs in its own task on its own Kafka clients, so a slow answer delays only it. The task
    never raises: a failed refresh keeps the last values (their age is
    ``audit_consumer_group_lag_updated_timestamp_seconds``), is logged once a minute, and a
    transient one makes ``health`` not ready (Kafka cannot be reached).
    """

    def __init__(
        self,
        kafka: KafkaConnection,
        topic: str,
        interval: float,
        metrics: ConsumerMetrics,
        health: Health,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.interval = interval
        self.metrics = metrics
        self.health = health
        self._task: asyncio.Task[None] | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._exported: set[tuple[str, str, str]] = set()
        self._failures = 0
        self._logged_at = -LOG_EVERY

    @property
    def failures(self) -> int:
        """Refreshes failed in a row."""
        return self._failures

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._close_clients()

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(REFRESH_TIMEOUT):
                    await self.refresh()
            except Exception as exc:  # a monitor outlives any surprise: it tries again later
                await self._failed(exc)
            else:
                self._succeeded()
            await asyncio.sleep(self.interval)

    async def refresh(self) -> None:
        """Read every group's offsets and the end offsets once, and set the gauges.

        Raises KafkaError (or is cancelled by the caller's timeout); the gauges are set only
        once everything was read.
        """
        admin, reader = await self._clients()
        # Every topic's metadata: asking for this one by name would have the broker create it
        # with its default partition count when it does not exist yet.
        described = [t for t in await admin.describe_topics() if t["topic"] == self.topic]
        if described and described[0]["error_code"]:
            raise for_code(described[0]["error_code"])(f"cannot describe {self.topic}")
        partitions = described[0]["partitions"] if described else []  # no topic yet, no lag
        tps = {TopicPartition(self.topic, p["partition"]) for p in partitions}
        groups = sorted({group[0] for group in await admin.list_consumer_groups()})
        offsets = await asyncio.gather(*(admin.list_consumer_group_offsets(g) for g in groups))
        committed: Committed = {}
        for group, group_offsets in zip(groups, offsets, strict=True):
            ours = {tp: meta.offset for tp, meta in group_offsets.items() if tp in tps}
            if any(offset >= 0 for offset in ours.values()):
                committed[group] = ours
        ends: dict[TopicPartition, int] = await reader.end_offsets(list(tps)) if committed else {}
        self._export(committed, ends)

    def _export(self, committed: Committed, ends: dict[TopicPartition, int]) -> None:
        exported: set[tuple[str, str, str]] = set()
        for group, group_offsets in committed.items():
            for tp, offset in group_offsets.items():
                if offset < 0 or tp not in ends:
                    continue
                labels = (group, tp.topic, str(tp.partition))
                self.metrics.group_lag.labels(*labels).set(max(0, ends[tp] - offset))
                self.metrics.group_committed.labels(*labels).set(offset)
                exported.add(labels)
        for labels in self._exported - exported:  # groups whose offsets expired or were deleted
            self.metrics.group_lag.remove(*labels)
            self.metrics.group_committed.remove(*labels)
        self._exported = exported
        self.metrics.group_lag_updated.set(time.time())

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._reader is None:
            kwargs = self.kafka.client_kwargs()
            self._admin = AIOKafkaAdminClient(client_id="audit-consumer-group-lag", **kwargs)
            self._reader = AIOKafkaConsumer(
                client_id="audit-consumer-group-lag", group_id=None, **kwargs
            )
            await self._admin.start()
            await self._reader.start()
        return self._admin, self._reader

    async def _close_clients(self) -> None:
        admin, self._admin = self._admin, None
        reader, self._reader = self._reader, None
        if admin is not None:
            await admin.close()
        if reader is not None:
            await reader.stop()

    async def _failed(self, exc: BaseException) -> None:
        # Clients that failed to start cannot be started again: the next try builds new ones.
        await self._close_clients()
        self._failures += 1
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError) or getattr(exc, "retriable", False):
            self.health.kafka_reachable(reason)
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            log.warning(
                "cannot read the consumer groups' lag on %s (%d failures so far, logged once "
                "a minute): %s",
                self.topic,
                self._failures,
                reason,
            )

    def _succeeded(self) -> None:
        self.health.kafka_reachable(None)
        if self._failures:
            log.info("read the consumer groups' lag again after %d failures", self._failures)
            self._failures = 0
            self._logged_at = -LOG_EVERY
