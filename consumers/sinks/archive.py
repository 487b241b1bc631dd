"""``--sink archive``: gzip JSON lines objects in S3, GCS, Azure Blob or a directory, kept for
years (``consumers.archive.layout`` says where each goes).

Events are held per partition and written as one object when the partition's held events
reach ``--archive-max-bytes``, are ``--archive-max-seconds`` old, or the next event belongs
elsewhere (another cluster or hour, an offset not following). The runner commits offsets only
past what is written (``held``). After a crash the events come again from the last commit; an
object that was written but not committed is found by its first offset, and its events are
skipped, so the same objects are never written under other keys.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Self, cast

from prometheus_client import CollectorRegistry, Counter, Gauge

from audit_common.errors import ArchiveUnavailable, ConfigError
from audit_common.options import EnvArgumentParser, positive_float, positive_int
from consumers.archive.layout import (
    LATE,
    ObjectKey,
    cluster_of,
    encode,
    event_time,
    hour_of,
    hour_prefix,
)
from consumers.archive.parquet import encode_parquet, require_pyarrow
from consumers.archive.store import ArchiveStore, RetentionMode, StoreSettings, gather_limited
from consumers.events import ConsumedEvent
from consumers.sinks.base import Sink
from consumers.sinks.jsonl import JsonLinesSink

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_SECONDS = 300.0
PARALLEL_PUTS = 8
Partition = tuple[str, int]


@dataclass
class _Held:
    """Consecutive events of one partition, one cluster and one hour, not yet written."""

    cluster: str
    hour: datetime
    opened: float
    events: list[ConsumedEvent] = field(default_factory=list)
    size: int = 0

    def takes(self, event: ConsumedEvent, cluster: str, moment: datetime) -> bool:
        return (
            cluster == self.cluster
            and event.offset == self.events[-1].offset + 1
            and self.hour - LATE <= hour_of(moment) <= self.hour
        )


@dataclass(frozen=True)
class ArchiveSettings:
    store: StoreSettings
    max_bytes: int = DEFAULT_MAX_BYTES
    max_seconds: float = DEFAULT_MAX_SECONDS
    format: str = "jsonl"


class ArchiveSink(Sink):
    """Holds events per partition and writes them as archive objects when due."""

    name = "archive"
    takes_every_event = True

    def __init__(
        self, settings: ArchiveSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._store: ArchiveStore | None = None
        self._open: dict[Partition, _Held] = {}
        self._due: list[_Held] = []  # closed, waiting for the next flush
        self._taken: dict[Partition, int] = {}  # last offset held, written or found written
        self._checked: set[Partition] = set()  # partitions whose resume point was looked up
        self._newest = 0.0  # event time (epoch) of the newest event written
        self._objects = Counter(
            "audit_consumer_archive_objects", "Objects written to the archive", registry=None
        )
        self._bytes = Counter(
            "audit_consumer_archive_bytes",
            "Bytes (compressed) written to the archive",
            registry=None,
        )
        self._lag = Gauge(
            "audit_consumer_archive_lag_seconds",
            "Seconds between now and the time of the newest event written to the archive",
            registry=None,
        )
        self._lag.set_function(lambda: time.time() - self._newest if self._newest else 0.0)

    @classmethod
    def add_arguments(cls, parser: EnvArgumentParser) -> None:
        add_store_arguments(parser)
        parser.add_option(
            "--archive-max-bytes",
            type=positive_int,
            default=DEFAULT_MAX_BYTES,
            help="write a partition's object once its events reach this many bytes (before "
            "gzip); memory is up to this much per partition assigned",
        )
        parser.add_option(
            "--archive-max-seconds",
            type=positive_float,
            default=DEFAULT_MAX_SECONDS,
            help="write a partition's object once its first event has been held this long",
        )
        parser.add_option(
            "--archive-format",
            choices=("jsonl", "parquet"),
            default="jsonl",
            help="jsonl: gzip JSON lines of the events as published; parquet: the columns "
            "people query and each event's text (needs pyarrow)",
        )
        parser.add_option(
            "--archive-retain-days",
            type=int,
            default=0,
            help="S3 Object Lock: keep each object at least this many days (0: no retention; "
            "the bucket must have Object Lock enabled)",
        )
        parser.add_option(
            "--archive-retain-mode",
            choices=("governance", "compliance"),
            default="governance",
            help="Object Lock mode: governance (s3:BypassGovernanceRetention may delete) or "
            "compliance (nobody can, root included, until the date)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        store = store_from_args(args, "--sink archive")
        store = StoreSettings(
            store.url,
            store.endpoint,
            args.archive_retain_days,
            cast(RetentionMode, args.archive_retain_mode),
        )
        store.check()
        if args.archive_format == "parquet":
            require_pyarrow()
        return cls(
            ArchiveSettings(
                store, args.archive_max_bytes, args.archive_max_seconds, args.archive_format
            )
        )

    def register_metrics(self, registry: CollectorRegistry) -> None:
        for metric in (self._objects, self._bytes, self._lag):
            registry.register(metric)

    async def open(self) -> None:
        if self._store is None:
            self._store = ArchiveStore(self.settings.store)

    async def write(self, events: Sequence[ConsumedEvent]) -> None:
        for event in events:
            tp = (event.topic, event.partition)
            if event.offset <= self._taken.get(tp, -1):
                continue  # a retried batch, or already in an object an earlier run wrote
            cluster, moment = cluster_of(event), event_time(event)
            held = self._open.get(tp)
            if held is not None and not held.takes(event, cluster, moment):
                self._close(tp)
                held = None
            if held is None:
                if tp not in self._checked and await self._written_before(event, cluster, moment):
                    continue
                held = self._open[tp] = _Held(cluster, hour_of(moment), self._clock())
            held.events.append(event)
            held.size += len(event.raw) + 1
            self._taken[tp] = event.offset
            if held.size >= self.settings.max_bytes:
                self._close(tp)

    async def _written_before(self, event: ConsumedEvent, cluster: str, moment: datetime) -> bool:
        """Whether an object starting at ``event`` exists (written by a run that was killed
        before it committed); if so its offsets count as taken."""
        assert self._store is not None
        tp = (event.topic, event.partition)
        for path in await self._store.list_names(hour_prefix(cluster, hour_of(moment))):
            key = ObjectKey.parse(path)
            if key and (key.topic, key.partition, key.first) == (*tp, event.offset):
                log.info("%s is archived already (written before a restart); skipping it", path)
                self._taken[tp] = key.last
                return True
        self._checked.add(tp)
        return False

    def _close(self, tp: Partition) -> None:
        self._due.append(self._open.pop(tp))

    async def flush(self) -> None:
        """Write the objects due: closed ones, and those past the size or age bound."""
        now = self._clock()
        for tp, held in list(self._open.items()):
            if now - held.opened >= self.settings.max_seconds:
                self._close(tp)
        await self._write_due()

    async def drain(self) -> None:
        for tp in list(self._open):
            self._close(tp)
        await self._write_due()
        # Partitions may come back after a rebalance from another member's offsets.
        self._checked.clear()
        self._taken.clear()

    async def _write_due(self) -> None:
        if not self._due:
            return
        due, self._due = self._due, []
        errors = await gather_limited(PARALLEL_PUTS, *(self._put(held) for held in due))
        failed = [held for held, error in zip(due, errors, strict=True) if error is not None]
        self._due = failed + self._due
        if failed:
            error = next(error for error in errors if error is not None)
            raise ArchiveUnavailable(
                f"{len(failed)} of {len(due)} archive objects not written: {error}"
            ) from error

    async def _put(self, held: _Held) -> ArchiveUnavailable | None:
        """Write one object; the error instead of raising it, so that the others go on."""
        assert self._store is not None
        first, last = held.events[0], held.events[-1]
        key = ObjectKey(
            held.cluster,
            held.hour,
            first.topic,
            first.partition,
            first.offset,
            last.offset,
            self.settings.format,
        )
        lines = [JsonLinesSink.line(event) for event in held.events]
        if key.format == "parquet":
            encoded = encode_parquet(key, held.events, lines)
        else:
            encoded = encode(key, lines)
        try:
            await self._store.put(encoded.key.path, encoded.body, encoded.metadata)
        except ArchiveUnavailable as exc:
            return exc
        self._objects.inc()
        self._bytes.inc(len(encoded.body))
        newest = max(event_time(event) for event in held.events).timestamp()
        self._newest = max(self._newest, newest)
        log.debug("wrote %s (%d events)", encoded.key.path, encoded.count)
        return None

    def held(self) -> dict[Partition, int]:
        firsts: dict[Partition, int] = {}
        for held in [*self._due, *self._open.values()]:
            first = held.events[0]
            tp = (first.topic, first.partition)
            firsts[tp] = min(first.offset, firsts.get(tp, first.offset))
        return firsts

    async def close(self) -> None:
        self._store = None


def add_store_arguments(parser: EnvArgumentParser) -> None:
    """The flags naming the archive, shared by the sink and the ``archive verify`` and
    ``replay`` commands."""
    parser.add_option(
        "--archive-url",
        help="s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX], az://CONTAINER[/PREFIX] or "
        "file:///DIR; credentials as each cloud's SDK takes them (environment, IRSA, "
        "workload identity)",
    )
    parser.add_option(
        "--archive-endpoint",
        help="URL of an S3-compatible server (MinIO, Ceph, S3Proxy...); http:// allowed",
    )


def store_from_args(args: argparse.Namespace, needed_by: str) -> StoreSettings:
    if not args.archive_url:
        raise ConfigError(f"{needed_by} needs --archive-url")
    settings = StoreSettings(args.archive_url, args.archive_endpoint)
    settings.check()
    return settings
