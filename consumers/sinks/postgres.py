"""``--sink postgres``: the queryable audit store (see ``audit-consumer query``).

Each flush inserts the buffered batch in one transaction and returns once it is committed, so
the runner commits Kafka offsets only for rows that are in the table. A unique key on (cluster,
digest of the event's bytes) with ON CONFLICT DO NOTHING makes redelivery harmless, and keeps
distinct events that share auditID, stage and stageTimestamp.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from audit_common.options import EnvArgumentParser, positive_float, positive_int
from consumers.events import ConsumedEvent
from consumers.postgres.connection import (
    POSTGRES_ERRORS,
    PostgresConnection,
    add_postgres_arguments,
    postgres_connection_from_args,
)
from consumers.postgres.migrate import migrate
from consumers.postgres.retention import Retention, RetentionSettings
from consumers.postgres.rows import COLUMNS, Row, as_text, jsonb_event, row
from consumers.sinks.base import EventsRefused, Sink, build_each

log = logging.getLogger(__name__)

_COLUMNS = ", ".join(COLUMNS)
# Each batch is copied (binary COPY, the fastest way in) into a temporary table of the
# session, then moved into audit_events in consumption order (ids follow it, and the first of
# two copies in one batch wins), skipping rows that are there already.
STAGING = "audit_events_incoming"
CREATE_STAGING = (
    f"CREATE TEMP TABLE {STAGING} ON COMMIT DELETE ROWS AS "
    f"SELECT 0 AS position, {_COLUMNS} FROM audit_events WITH NO DATA"
)
INSERT = (
    f"INSERT INTO audit_events ({_COLUMNS}) SELECT {_COLUMNS} FROM {STAGING} ORDER BY position "
    "ON CONFLICT (cluster, event_digest) DO NOTHING"
)


# What the database answers, every time, to a value it will not store: SQLSTATE class 22 (a
# value a type refuses) and 54 (a program limit: a name or user too long for an index entry).
REFUSED_VALUES = (asyncpg.DataError, asyncpg.ProgramLimitExceededError)


@dataclass(frozen=True)
class PostgresSinkSettings:
    connection: PostgresConnection
    retention: RetentionSettings | None = None


class PostgresSink(Sink):
    """Inserts events into ``audit_events``; migrates the schema when it opens.

    ``write`` only buffers; ``flush`` inserts the buffer in one transaction. A failed flush
    raises SinkError and drops the buffer: the runner writes the same batch again, and the rows
    that may have been committed before the failure are skipped by the unique key.
    """

    name = "postgres"

    def __init__(self, settings: PostgresSinkSettings) -> None:
        self.settings = settings
        self._pool: asyncpg.Pool | None = None
        self._retention: Retention | None = None
        self._pending: list[tuple[ConsumedEvent, Row]] = []

    @classmethod
    def add_arguments(cls, parser: EnvArgumentParser) -> None:
        add_postgres_arguments(parser)
        add = parser.add_option
        add(
            "--postgres-retain-days",
            type=positive_int,
            metavar="DAYS",
            help="delete rows whose stage timestamp is older than DAYS (default: keep all)",
        )
        add(
            "--postgres-retention-chunk",
            type=positive_int,
            default=10000,
            metavar="ROWS",
            help="most rows one retention transaction deletes",
        )
        add(
            "--postgres-retention-interval",
            type=positive_float,
            default=3600.0,
            metavar="SECONDS",
            help="time between retention passes (the first runs at start)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        retention = None
        if args.postgres_retain_days is not None:
            retention = RetentionSettings(
                args.postgres_retain_days,
                args.postgres_retention_chunk,
                args.postgres_retention_interval,
            )
        return cls(PostgresSinkSettings(postgres_connection_from_args(args), retention))

    async def open(self) -> None:
        if self._pool is not None:
            return
        connection = self.settings.connection
        session = await connection.connect()
        try:
            await migrate(session)
        except POSTGRES_ERRORS as exc:
            raise connection.translate(exc, "migrate the schema of") from exc
        finally:
            with contextlib.suppress(*POSTGRES_ERRORS):
                await session.close(timeout=connection.timeout)
        pool = await connection.create_pool(
            size=1 if self.settings.retention is None else 2, init=_create_staging
        )
        self._pool = pool
        if self.settings.retention is not None:
            self._retention = Retention(self.settings.retention, pool, connection)
            self._retention.start()
        log.info("writing to PostgreSQL at %s", connection.target)

    async def write(self, events: Sequence[ConsumedEvent]) -> None:
        """Buffer the rows; raises EventsRefused after that for events without one."""
        built, refused = build_each(events, row)
        self._pending.extend(built)
        if refused:
            raise EventsRefused(refused)

    async def flush(self) -> None:
        """Insert what was written in one transaction. Raises SinkError, or EventsRefused once
        every other row is in when the database refuses some rows for good."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        assert self._pool is not None, "flush before open"
        rows = [values for _, values in pending]
        refused: list[tuple[ConsumedEvent, str]] = []
        try:
            async with self._pool.acquire() as session:
                try:
                    status = await _insert(session, rows)
                except REFUSED_VALUES:
                    # jsonb refuses some valid JSON (an escape that is no Unicode character, a
                    # number beyond numeric's range): those events are kept as text instead.
                    rows = [await _jsonb_or_text(session, values) for values in rows]
                    try:
                        status = await _insert(session, rows)
                    except REFUSED_VALUES:
                        # Another value it will never take: row by row, to refuse only it.
                        status, refused = await _insert_each(session, pending, rows)
        except POSTGRES_ERRORS as exc:
            raise self.settings.connection.translate(exc, "insert into") from exc
        inserted = int(status.rpartition(" ")[2])
        if inserted < len(rows) - len(refused):
            log.debug("%d of %d rows were stored already", len(rows) - inserted, len(rows))
        if refused:
            raise EventsRefused(refused)

    async def close(self) -> None:
        self._pending.clear()
        if self._retention is not None:
            await self._retention.stop()
            self._retention = None
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self.settings.connection.timeout)
        except POSTGRES_ERRORS:
            # The server is gone or stuck: nothing is pending, so just drop the connections.
            pool.terminate()


async def _insert(session: asyncpg.Connection | PoolConnectionProxy, rows: list[Row]) -> str:
    """Copy ``rows`` in and move the new ones into audit_events, in one transaction."""
    async with session.transaction():
        await session.copy_records_to_table(
            STAGING,
            records=[(position, *values) for position, values in enumerate(rows)],
            columns=("position", *COLUMNS),
        )
        status: str = await session.execute(INSERT)
        return status


async def _insert_each(
    session: asyncpg.Connection | PoolConnectionProxy,
    pending: list[tuple[ConsumedEvent, Row]],
    rows: list[Row],
) -> tuple[str, list[tuple[ConsumedEvent, str]]]:
    """Insert ``rows`` one transaction each; an INSERT status for those stored, and the events
    of those the database refused, with its reason."""
    inserted = 0
    refused = []
    for (event, _), values in zip(pending, rows, strict=True):
        try:
            status = await _insert(session, [values])
        except REFUSED_VALUES as exc:
            refused.append((event, f"PostgreSQL refused the row: {exc}"))
        else:
            inserted += int(status.rpartition(" ")[2])
    return f"INSERT 0 {inserted}", refused


async def _jsonb_or_text(session: asyncpg.Connection | PoolConnectionProxy, values: Row) -> Row:
    """``values`` as they are when jsonb takes the event, with the event as text otherwise."""
    event = jsonb_event(values)
    if event is None:
        return values
    try:
        await session.fetchval("SELECT $1::text::jsonb IS NOT NULL", event)
    except asyncpg.DataError:
        return as_text(values)
    return values


async def _create_staging(session: asyncpg.Connection) -> None:
    await session.execute(CREATE_STAGING)
