"""``--postgres-retain-days``: delete audit rows older than N days, in bounded chunks.

Each chunk is its own short transaction, so retention never holds locks for long nor builds one
huge transaction; chunks are picked with SKIP LOCKED, so replicas that run it at the same time
share the work instead of waiting on each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from consumers.postgres.connection import POSTGRES_ERRORS, PostgresConnection

log = logging.getLogger(__name__)

DELETE_CHUNK = """
DELETE FROM audit_events WHERE id IN (
    SELECT id FROM audit_events WHERE stage_timestamp < $1
    ORDER BY stage_timestamp LIMIT $2 FOR UPDATE SKIP LOCKED
)
"""


@dataclass(frozen=True)
class RetentionSettings:
    days: int
    chunk: int = 10000
    interval: float = 3600.0


class Retention:
    """Runs a retention pass at start and every ``interval`` seconds, in the background.

    Owned by the postgres sink: ``start`` after it opened its pool, ``stop`` when it closes.
    Failures are logged and the pass is tried again at the next interval; nothing is raised.
    """

    def __init__(
        self, settings: RetentionSettings, pool: asyncpg.Pool, connection: PostgresConnection
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.connection = connection
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="postgres-retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_once(self) -> int:
        """Delete every row older than the retention period; returns how many went."""
        cutoff = datetime.now(UTC) - timedelta(days=self.settings.days)
        total = 0
        while True:
            async with self.pool.acquire() as connection:
                status = await connection.execute(DELETE_CHUNK, cutoff, self.settings.chunk)
            deleted = int(status.rpartition(" ")[2])
            total += deleted
            if deleted < self.settings.chunk:
                return total

    async def _run(self) -> None:
        while True:
            try:
                deleted = await self.run_once()
            except POSTGRES_ERRORS as exc:
                error = self.connection.translate(exc, "delete old rows from")
                log.warning(
                    "retention pass failed, next try in %.0fs: %s", self.settings.interval, error
                )
            else:
                if deleted:
                    log.info(
                        "retention deleted %d rows older than %d days", deleted, self.settings.days
                    )
            await asyncio.sleep(self.settings.interval)
