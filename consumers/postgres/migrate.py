"""Versioned schema migrations of the audit store, applied when the postgres sink opens.

``schema_migrations`` records each applied version. All pending migrations run in one
transaction under an advisory lock, so replicas that start together migrate once, and a
failure leaves the schema as it was.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from audit_common.errors import ConfigError

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key taken while migrating (any constant unlikely to collide).
LOCK_KEY = 0x6B_61_75_64_69_74  # "kaudit"
_NAME = re.compile(r"(\d{4})_(\w+)\.sql")

CREATE_VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The migrations shipped in ``consumers.postgres.migrations``, by version (1, 2, ...)."""
    migrations = []
    for entry in resources.files("consumers.postgres.migrations").iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            migrations.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    migrations.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in migrations]
    assert versions == list(range(1, len(versions) + 1)), f"migration gap: {versions}"
    return migrations


async def migrate(connection: asyncpg.Connection | PoolConnectionProxy) -> list[int]:
    """Apply the pending migrations; returns their versions (empty when up to date).

    Called by the postgres sink's ``open``. Raises ConfigError when the database was migrated by
    a newer audit-consumer; asyncpg errors propagate for the caller to translate.
    """
    migrations = load_migrations()
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await connection.execute(CREATE_VERSIONS)
        rows = await connection.fetch("SELECT version FROM schema_migrations")
        applied = {row["version"] for row in rows}
        latest = migrations[-1].version
        if applied and max(applied) > latest:
            raise ConfigError(
                f"the audit store's schema is at version {max(applied)}, newer than this "
                f"audit-consumer knows ({latest}): upgrade audit-consumer"
            )
        pending = [migration for migration in migrations if migration.version not in applied]
        for migration in pending:
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
    if pending:
        log.info("migrated the audit store to schema version %d", latest)
    return [migration.version for migration in pending]
