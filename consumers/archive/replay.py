"""``audit-consumer replay URL --since T --until T (--to-topic TOPIC | --sink NAME)``.

Reads the archive objects whose keys can hold [since, until) (``reading.find_objects``), keeps
the events of that range (and of the consumer's ``--include``/``--exclude``), and either
republishes them to a topic, as the relay's records with a ``replay`` header naming the run,
or writes them through any sink: ``--sink alerts --rules new.yaml`` hunts the past with new
rules (alerts carry the events' own times), ``--sink postgres`` backfills.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from tqdm import tqdm

from audit_common.errors import AuditRelayError, ConfigError, InvalidEvent, KafkaUnavailable
from audit_common.headers import REPLAY, headers_of
from audit_common.kafka_connection import kafka_connection_from_args
from audit_common.logs import configure_logging
from consumers.archive.layout import ObjectKey, event_time
from consumers.archive.reading import Range, find_objects, parse_time, read_objects
from consumers.archive.store import ArchiveStore, StoreSettings
from consumers.events import ConsumedEvent, decode
from consumers.filters import EventFilter
from consumers.settings import build_parser
from consumers.sinks import SINKS, Sink

log = logging.getLogger(__name__)

SINK_ATTEMPTS = 5
_RELAY_PREFIX = re.compile(rb'\{"kind":"Event","apiVersion":"([a-z0-9./]+)"')


@dataclass
class Tally:
    objects: int = 0
    read: int = 0
    out_of_range: int = 0
    filtered: int = 0
    undecodable: int = 0
    replayed: int = 0


class Replay:
    """One replay run: where from, which events, where to. Built by ``run_replay``."""

    def __init__(
        self,
        store: ArchiveStore,
        where: Range,
        event_filter: EventFilter,
        max_batch: int,
        progress: bool,
    ) -> None:
        self.store = store
        self.where = where
        self.event_filter = event_filter
        self.max_batch = max_batch
        self.progress = progress
        self.tally = Tally()

    @property
    def name(self) -> str:
        """What the ``replay`` header says: the archive and the range."""
        assert self.where.since is not None and self.where.until is not None
        cluster = f" cluster={self.where.cluster}" if self.where.cluster else ""
        since, until = self.where.since.isoformat(), self.where.until.isoformat()
        return f"{self.store.settings.url} {since}/{until}{cluster}"

    async def batches(self) -> AsyncIterator[list[ConsumedEvent]]:
        """The events of the range, ``max_batch`` at a time, in archive order."""
        keys = await find_objects(self.store, self.where)
        self.tally.objects = len(keys)
        bar = tqdm(total=len(keys), unit="obj", disable=not self.progress, file=sys.stderr)
        batch: list[ConsumedEvent] = []
        try:
            async for read in read_objects(self.store, keys):
                bar.update(1)
                for event in self._events(read.key, read.lines):
                    batch.append(event)
                    if len(batch) >= self.max_batch:
                        yield batch
                        batch = []
                bar.set_postfix(events=self.tally.replayed + len(batch), refresh=False)
            if batch:
                yield batch
        finally:
            bar.close()

    def _events(self, key: ObjectKey, lines: list[bytes]) -> list[ConsumedEvent]:
        assert self.where.since is not None and self.where.until is not None
        kept = []
        headers = [("cluster", key.cluster.encode())]
        for index, line in enumerate(lines):
            self.tally.read += 1
            try:
                event = decode(
                    line,
                    headers,
                    topic=key.topic,
                    partition=key.partition,
                    offset=key.first + index,
                )
            except InvalidEvent:
                self.tally.undecodable += 1
                continue
            if not self.where.since <= event_time(event) < self.where.until:
                self.tally.out_of_range += 1
            elif not self.event_filter.accepts(event):
                self.tally.filtered += 1
            else:
                kept.append(event)
        return kept

    async def to_topic(self, producer: AIOKafkaProducer, topic: str) -> None:
        """Publish every event of the range to ``topic``; raises KafkaUnavailable."""
        name = self.name.encode()
        try:
            async for batch in self.batches():
                futures = [
                    await producer.send(
                        topic,
                        event.raw,
                        key=event.audit_id.encode(),
                        headers=[*_relay_headers(event), (REPLAY, name)],
                        timestamp_ms=int(event_time(event).timestamp() * 1000),
                    )
                    for event in batch
                ]
                await asyncio.gather(*futures)
                self.tally.replayed += len(batch)
        except KafkaError as exc:
            raise KafkaUnavailable(f"cannot publish to {topic}: {exc}") from exc

    async def to_sink(self, sink: Sink) -> None:
        """Write every event of the range through ``sink``; a failing batch is tried
        ``SINK_ATTEMPTS`` times, then the SinkError is raised."""
        async with sink:
            async for batch in self.batches():
                for attempt in range(1, SINK_ATTEMPTS + 1):
                    try:
                        await sink.write(batch)
                        await sink.drain()
                        break
                    except AuditRelayError as exc:
                        if not exc.retriable or attempt == SINK_ATTEMPTS:
                            raise
                        log.warning("cannot write to the sink (try %d): %s", attempt, exc)
                        await asyncio.sleep(0.5 * 2**attempt)
                self.tally.replayed += len(batch)


def _api_version(event: ConsumedEvent) -> Any:
    """The event's apiVersion: read where the relay writes it, second after kind, rather than
    decoding the whole event, which would cost more than the rest of the replay."""
    found = _RELAY_PREFIX.match(event.raw)
    return found[1].decode() if found else event.data.get("apiVersion")


def _relay_headers(event: ConsumedEvent) -> list[tuple[str, bytes]]:
    """The headers the relay gave the event's record."""
    return headers_of(
        event.cluster,
        _api_version(event),
        event.verb,
        event.stage,
        event.level,
        event.resource,
        event.namespace,
        event.username,
    )


def run_replay(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    parser = build_parser(environ)
    parser.prog = "audit-consumer replay"
    parser.description = (
        "Replay a time range of the archive into a topic (--to-topic) or through a sink "
        "(--sink and its flags); the consumer's Kafka and filter flags apply."
    )
    parser.add_argument("url", help="the archive: s3://BUCKET[/PREFIX], gs://, az://, file://")
    parser.add_argument("--since", required=True, help="start of the range (RFC 3339)")
    parser.add_argument("--until", required=True, help="end of the range, excluded (RFC 3339)")
    parser.add_argument("--cluster", help="only this cluster's events")
    parser.add_argument("--to-topic", help="republish to this Kafka topic")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        since, until = parse_time(args.since), parse_time(args.until)
        if since >= until:
            raise ValueError(f"--since {args.since} is not before --until {args.until}")
        if (args.to_topic is None) == (args.sink is None):
            raise ValueError("give one of --to-topic TOPIC or --sink NAME")
        store = ArchiveStore(StoreSettings(args.url, args.archive_endpoint))
        sink = SINKS[args.sink].from_args(args) if args.sink else None
        replay = Replay(
            store,
            Range(args.cluster, since, until),
            EventFilter.parse(args.include, args.exclude),
            args.max_batch,
            sys.stderr.isatty(),
        )
    except (ValueError, ConfigError) as exc:
        print(f"audit-consumer replay: error: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        asyncio.run(_run(replay, args, sink))
    except AuditRelayError as exc:
        print(f"audit-consumer replay: error: {exc}", file=sys.stderr)
        return 1
    t = replay.tally
    target = f"topic {args.to_topic}" if args.to_topic else f"the {args.sink} sink"
    print(
        f"replayed {t.replayed} events into {target} in {time.monotonic() - started:.1f} s: "
        f"{t.objects} objects, {t.read} events read, {t.out_of_range} outside the range, "
        f"{t.filtered} filtered out, {t.undecodable} undecodable"
    )
    return 0


async def _run(replay: Replay, args: argparse.Namespace, sink: Sink | None) -> None:
    if sink is not None:
        await replay.to_sink(sink)
        return
    kafka = kafka_connection_from_args(args).client_kwargs()
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **kafka)
    try:
        await producer.start()
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot reach Kafka: {exc}") from exc
    try:
        await replay.to_topic(producer, args.to_topic)
    finally:
        await producer.stop()
