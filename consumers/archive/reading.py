"""Finding and reading archive objects, for ``archive verify`` and ``replay``.

Only the hour prefixes a time range can hold are listed (``layout.hours_between``): a range of
an hour reads two hours of one cluster, however many years the archive keeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote

from audit_common.errors import ConfigError
from consumers.archive.layout import (
    ObjectKey,
    cluster_prefix,
    decode_lines,
    digest,
    hour_of,
    hour_prefix,
    hours_between,
)
from consumers.archive.store import ArchiveStore, gather_limited

PARALLEL_GETS = 16


def parse_time(text: str) -> datetime:
    """An RFC 3339 time or date (``2026-01-31``, ``2026-01-31T10:00:00Z``); naive is UTC.
    Raises ValueError with a message fit for the command line."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time such as 2026-01-31T10:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Range:
    """Which objects to read: a cluster (None: all) and a time range (None: unbounded)."""

    cluster: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def find_objects(store: ArchiveStore, where: Range) -> list[ObjectKey]:
    """The keys of the archive objects ``where`` can hold, in (hour, topic, partition, first)
    order. Raises ArchiveUnavailable."""
    if where.cluster is not None:
        clusters = [where.cluster]
    else:
        clusters = [
            unquote(prefix.removeprefix("cluster=").rstrip("/"))
            for prefix in await store.list_dirs(None)
            if prefix.startswith("cluster=")
        ]
    prefixes: list[str] = []
    for cluster in clusters:
        prefixes.extend(await _hour_prefixes(store, cluster, where))
    listed = await gather_limited(PARALLEL_GETS, *(store.list_names(p) for p in prefixes))
    keys = [key for names in listed for key in map(ObjectKey.parse, names) if key is not None]
    return sorted(keys, key=lambda k: (k.hour, k.topic, k.partition, k.first))


async def _hour_prefixes(store: ArchiveStore, cluster: str, where: Range) -> list[str]:
    if where.since is not None and where.until is not None:
        return [hour_prefix(cluster, hour) for hour in hours_between(where.since, where.until)]
    # Unbounded on a side: list the days, then the hours of the days in range.
    prefixes = []
    for day in await store.list_dirs(cluster_prefix(cluster)):
        for hour in await store.list_dirs(day):
            key = ObjectKey.parse(f"{hour}x-0-0-0.jsonl.gz")
            if key is None:
                continue
            if where.since is not None and key.hour < hour_of(where.since):
                continue
            if where.until is not None and key.hour >= where.until:
                continue
            prefixes.append(hour)
    return prefixes


@dataclass(frozen=True)
class ReadObject:
    """One archive object as read: its lines, and what its metadata and body say."""

    key: ObjectKey
    lines: list[bytes]
    metadata: dict[str, str]
    sha256: str
    problem: str | None  # why it is not what its key and metadata say, None when it is


async def read_objects(
    store: ArchiveStore, keys: Sequence[ObjectKey], window: int = PARALLEL_GETS
) -> AsyncIterator[ReadObject]:
    """Read ``keys`` in order, ``window`` at a time; a missing object (deleted since it was
    listed) comes with its problem. Raises ArchiveUnavailable."""
    for start in range(0, len(keys), window):
        chunk = keys[start : start + window]
        for read in await gather_limited(window, *(_read(store, key) for key in chunk)):
            yield read


async def _read(store: ArchiveStore, key: ObjectKey) -> ReadObject:
    try:
        body, metadata = await store.get(key.path)
    except FileNotFoundError:
        return ReadObject(key, [], {}, "", "deleted while being read")
    try:
        if key.format == "parquet":
            from consumers.archive.parquet import decode_parquet  # pyarrow: optional

            lines = decode_parquet(body)
        else:
            lines = decode_lines(body)
    except (OSError, EOFError, ConfigError) as exc:
        return ReadObject(key, [], metadata, "", f"unreadable: {exc}")
    sha256 = digest(lines)
    return ReadObject(key, lines, metadata, sha256, _problem(key, lines, metadata, sha256))


def _problem(
    key: ObjectKey, lines: list[bytes], metadata: dict[str, str], digest: str
) -> str | None:
    span = key.last - key.first + 1
    problems = []
    if metadata.get("count") != str(len(lines)):
        problems.append(f"metadata count {metadata.get('count')}, {len(lines)} lines")
    if len(lines) != span:
        problems.append(f"{len(lines)} lines for offsets {key.first}-{key.last} ({span})")
    if metadata.get("sha256") != digest:
        problems.append("SHA-256 of the lines differs from the metadata's")
    if (metadata.get("first-offset"), metadata.get("last-offset")) != (
        str(key.first),
        str(key.last),
    ):
        problems.append("offset range in the metadata differs from the key's")
    return "; ".join(problems) or None
