"""``audit-source eventhubs``: an AKS cluster's audit log, from the Event Hub its diagnostic
setting streams to, read through the hub's Kafka endpoint.

Event Hubs speaks Kafka on port 9093 of the namespace's host: TLS, SASL PLAIN with the user
``$ConnectionString`` and a connection string (of a policy with the ``Listen`` right) as the
password; the hub is the topic, its partitions the topic's. The source reads it in a consumer
group (``$Default`` unless told), so replicas split the partitions between them. Each Kafka
record is a diagnostic-settings document (``relay.sources.azure``): its ``kube-audit`` and
``kube-audit-admin`` records are the events, records of other categories are skipped and
counted (``audit_source_entries_skipped_total``).

The checkpoint is the group's committed offsets, kept by Event Hubs: on start they are
authoritative (a partition the group never committed begins at its end on a first start, at
its start, within the hub's retention, once this source has a checkpoint file or with
``--from-start``). Offsets are committed only in ``acknowledge``, after the runner delivered the
chunk and wrote the checkpoint file; the file holds the same offsets, which only count what a
restart reads again (``Chunk.repeated``). A partition revoked by a rebalance waits (a few
seconds) for the chunk under way to be committed; what is not is read again by its new owner:
at least once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncGenerator, Collection
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.conn import create_conn
from aiokafka.errors import (
    BrokerResponseError,
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
)

from audit_common.errors import ConfigError, SourceError
from audit_common.kafka_connection import KafkaConnection
from audit_common.options import EnvArgumentParser
from audit_common.secrets import read_secret_file
from relay.sources.azure import ConnectionString, parse_connection_string, unwrap
from relay.sources.backoff import with_retries
from relay.sources.base import Chunk, OnError, Position, Source

log = logging.getLogger(__name__)

DEFAULT_GROUP = "$Default"  # the consumer group every Event Hub has
# Kafka records (diagnostic documents, up to 1 MB each) per chunk.
_MAX_RECORDS = 64
_MAX_BACKOFF_S = 30.0
_COMMIT_TIMEOUT_S = 30.0
# How long a revoked partition waits for the chunk under way to be committed.
_REVOKE_WAIT_S = 10.0
# Event Hubs closes connections idle for 240 s and wants requests given 60 s: Microsoft's
# recommended Kafka client settings for it.
_CLIENT_SETTINGS: dict[str, Any] = {
    "connections_max_idle_ms": 180_000,
    "metadata_max_age_ms": 180_000,
    "request_timeout_ms": 60_000,
    "session_timeout_ms": 30_000,
    "heartbeat_interval_ms": 3_000,
}


class EventHubsSource(Source):
    """Reads one Event Hub in a consumer group; commits the group's offsets in
    ``acknowledge``."""

    kind: ClassVar[str] = "eventhubs"

    def __init__(
        self,
        connection: KafkaConnection,
        hub: str,
        group: str,
        *,
        from_start: bool,
        poll_interval: float,
        max_backoff: float = _MAX_BACKOFF_S,
    ) -> None:
        self.connection = connection
        self.hub = hub
        self.group = group
        self.from_start = from_start
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self._consumer: AIOKafkaConsumer | None = None
        self._on_error: OnError = lambda kind: None
        # Partition -> next offset: read (``_offsets``), and committed by this member.
        self._offsets: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        # Set while no chunk is under way: a revoked partition waits for it.
        self._settled = asyncio.Event()

    @classmethod
    def add_arguments(cls, parser: EnvArgumentParser) -> None:
        add = parser.add_option
        add(
            "--connection-string-file",
            help="eventhubs: file holding the connection string of a policy with the Listen "
            "right (on the hub, or its namespace) (required)",
        )
        add(
            "--eventhub",
            help="eventhubs: the Event Hub (default: the connection string's EntityPath)",
        )
        add(
            "--consumer-group",
            default=DEFAULT_GROUP,
            help="eventhubs: the hub's consumer group; replicas in one group split its partitions",
        )
        add(
            "--eventhubs-bootstrap",
            help="eventhubs: HOST:PORT of the Kafka endpoint (default: the connection string's "
            "Endpoint host, port 9093)",
        )
        add(
            "--eventhubs-ca-file",
            help="eventhubs: CA bundle for the endpoint's certificate (default: the system's)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EventHubsSource:
        if not args.connection_string_file:
            raise ConfigError("audit-source eventhubs needs --connection-string-file")
        flag = "--connection-string-file"
        text = read_secret_file(args.connection_string_file, flag)
        try:
            parsed = parse_connection_string(text)
        except ConfigError as exc:
            raise ConfigError(f"{flag} {args.connection_string_file}: {exc}") from exc
        hub = hub_of(parsed, args.eventhub or None)
        connection = KafkaConnection(
            bootstrap=args.eventhubs_bootstrap or parsed.bootstrap,
            tls=True,
            tls_ca_file=args.eventhubs_ca_file or None,
            sasl_mechanism="PLAIN",
            sasl_username="$ConnectionString",
            sasl_password=parsed.text,
        )
        try:
            connection.client_kwargs()  # a CA file that cannot be loaded: a usage error now
        except ConfigError as exc:
            raise ConfigError(f"--eventhubs-ca-file: {exc}") from exc
        return cls(
            connection,
            hub,
            args.consumer_group,
            from_start=args.from_start,
            poll_interval=args.poll_interval,
        )

    async def read(
        self, position: Position | None, on_error: OnError
    ) -> AsyncGenerator[Chunk, None]:
        self._on_error = on_error
        # What the checkpoint file says was delivered of this hub: reading it again is a repeat.
        delivered = offsets_of(position) if (position or {}).get("hub") == self.hub else {}
        # A partition the group never committed: its end on a true first start only.
        reset = "earliest" if self.from_start or position is not None else "latest"
        consumer = AIOKafkaConsumer(
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset=reset,
            client_id="audit-source-eventhubs",
            **_CLIENT_SETTINGS,
            **self.connection.client_kwargs(),
        )
        self._settled.set()
        try:
            where = f"Event Hubs at {self.connection.bootstrap}"
            await with_retries(
                lambda: self._connect(consumer), on_error, where, _failure_kind,
                max_backoff=self.max_backoff,
            )  # fmt: skip
            # A diagnostic setting may be created after the source: subscribing to a hub that
            # is not there yet would show nothing for minutes.
            await with_retries(
                lambda: self._hub_exists(consumer), on_error, where, _failure_kind,
                max_backoff=self.max_backoff,
            )  # fmt: skip
            consumer.subscribe([self.hub], listener=_Listener(self))
            self._consumer = consumer
            while True:
                batches = await self._poll(consumer)
                assigned = consumer.assignment()
                for tp in assigned:  # newly assigned: where it starts is committed with the rest
                    if tp.partition not in self._offsets:
                        self._offsets[tp.partition] = await consumer.position(tp)
                items: list[bytes] = []
                skipped = repeated = 0
                for tp, records in batches.items():
                    if tp not in assigned:
                        continue  # revoked since the fetch: its new owner reads it
                    for record in records:
                        unwrapped = unwrap(record.value)
                        items.extend(unwrapped.items)
                        skipped += unwrapped.skipped
                        if record.offset < delivered.get(tp.partition, -1):
                            repeated += len(unwrapped.items)
                    self._offsets[tp.partition] = records[-1].offset + 1
                caught_up = all(
                    self._offsets.get(tp.partition, 0) >= (consumer.highwater(tp) or 0)
                    for tp in assigned
                )
                self._settled.clear()
                yield Chunk(
                    items,
                    {
                        "hub": self.hub,
                        "offsets": {str(p): o for p, o in sorted(self._offsets.items())},
                    },
                    None if caught_up else time.time(),
                    caught_up=caught_up,
                    skipped=skipped,
                    repeated=repeated,
                )
                self._settled.set()
        finally:
            self._consumer = None
            self._settled.set()
            await consumer.stop()

    async def acknowledge(self, position: Position) -> None:
        """Commit the offsets of ``position`` the group did not have from this member, for
        the partitions still assigned to it. A rebalance or a coordinator that does not answer
        keeps them for the next chunk's commit (counted: ``rebalance``, ``commit``)."""
        consumer = self._consumer
        try:
            if consumer is None:
                return
            assigned = {tp.partition for tp in consumer.assignment()}
            offsets = {
                partition: offset
                for partition, offset in offsets_of(position).items()
                if partition in assigned and self._committed.get(partition) != offset
            }
            if not offsets:
                return
            commit = {TopicPartition(self.hub, p): o for p, o in offsets.items()}
            try:
                # aiokafka retries a coordinator that does not answer without end.
                await asyncio.wait_for(consumer.commit(commit), _COMMIT_TIMEOUT_S)
            except (CommitFailedError, IllegalStateError) as exc:
                self._on_error("rebalance")
                log.warning("offsets not committed, the group rebalanced: %s", exc)
                return
            except (KafkaError, TimeoutError) as exc:
                self._on_error("commit")
                log.warning("cannot commit offsets now, committed with the next chunk: %s", exc)
                return
            self._committed.update(offsets)
        finally:
            self._settled.set()

    async def revoked(self, partitions: Collection[TopicPartition]) -> None:
        """Called by the consumer when a rebalance takes ``partitions`` away: waits for the
        chunk under way to be committed, then forgets them (their new owner resumes at the
        group's offsets)."""
        if partitions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), _REVOKE_WAIT_S)
        for tp in partitions:
            self._offsets.pop(tp.partition, None)
            self._committed.pop(tp.partition, None)
        log.info("partitions revoked: %s", sorted(tp.partition for tp in partitions))

    async def _connect(self, consumer: AIOKafkaConsumer) -> None:
        """One attempt to connect: raises SourceError when the endpoint refuses the connection
        string or its certificate is not trusted, KafkaConnectionError when it cannot be
        reached now."""
        try:
            await consumer.start()
        except KafkaConnectionError as exc:
            refusal = await self._refusal()
            if refusal is not None:
                raise SourceError(refusal) from exc
            raise
        except KafkaError as exc:
            raise SourceError(f"Event Hubs at {self.connection.bootstrap}: {exc}") from exc

    async def _refusal(self) -> str | None:
        """Why the endpoint refuses this source for good (the connection string, the
        certificate), or None when it only cannot be reached now. aiokafka's bootstrap says
        neither (only "Unable to bootstrap"): one connection of its own tells."""
        kwargs = self.connection.client_kwargs()
        host, _, port = kwargs.pop("bootstrap_servers").split(",")[0].rpartition(":")
        try:
            conn = await create_conn(host, int(port), request_timeout_ms=10_000, **kwargs)
        except BrokerResponseError as exc:  # SaslAuthenticationFailed and its kind
            return (
                f"Event Hubs at {self.connection.bootstrap} refused the connection string "
                f"(SASL PLAIN, user $ConnectionString): {exc}"
            )
        except ssl.SSLCertVerificationError as exc:
            return (
                f"the certificate of {self.connection.bootstrap} is not trusted "
                f"(--eventhubs-ca-file): {exc.verify_message}"
            )
        except (OSError, TimeoutError, KafkaError):
            return None
        conn.close()
        return None

    async def _hub_exists(self, consumer: AIOKafkaConsumer) -> None:
        """Raises _HubMissing while the hub is not there (or the policy may not read it)."""
        if self.hub not in await consumer.topics():
            raise _HubMissing(f"no Event Hub {self.hub} (or the policy may not read it)")

    async def _poll(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        try:
            batches: dict[TopicPartition, list[Any]] = await consumer.getmany(
                timeout_ms=int(self.poll_interval * 1000), max_records=_MAX_RECORDS
            )
        except KafkaError as exc:  # what aiokafka does not retry itself: authorization...
            raise SourceError(f"cannot read Event Hub {self.hub}: {exc}") from exc
        return batches


class _HubMissing(Exception):
    """The hub is not (yet) in the namespace's topics."""


def _failure_kind(exc: Exception) -> str | None:
    """How ``with_retries`` treats a failed start: an endpoint out of reach and a hub not there
    yet are waited out; anything else (SourceError) is raised."""
    if isinstance(exc, KafkaConnectionError):
        return "unreachable"
    if isinstance(exc, _HubMissing):
        return "not-found"
    return None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: EventHubsSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.source.revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))


def hub_of(connection: ConnectionString, flag: str | None) -> str:
    """The hub to read: ``--eventhub``, or the connection string's EntityPath (they must agree:
    a hub's own policy reads that hub only). Raises ConfigError."""
    path = connection.entity_path
    if flag and path and flag != path:
        raise ConfigError(
            f"--eventhub {flag} is not the connection string's EntityPath {path}: a policy "
            "of one hub reads that hub only"
        )
    hub = flag or path
    if not hub:
        raise ConfigError(
            "audit-source eventhubs needs --eventhub, or a connection string with EntityPath"
        )
    return hub


def offsets_of(position: Position | None) -> dict[int, int]:
    """Partition -> next offset, from a position this source yielded (empty for None or a
    checkpoint it did not write)."""
    offsets = (position or {}).get("offsets")
    if not isinstance(offsets, dict):
        return {}
    return {
        int(partition): offset
        for partition, offset in offsets.items()
        if partition.isdigit() and isinstance(offset, int)
    }
