"""Where an archived event goes and what an archive object says of itself.

Keys: ``cluster=C/date=YYYY-MM-DD/hour=HH/<topic>-<partition>-<first>-<last>.jsonl.gz``, under
the URL's prefix. An object holds one run of consecutive offsets of one partition, all events
of one cluster; its hour is that of its first event's time. An object under ``hour=H`` holds
events of hour H, and late events of up to ``LATE`` before it (an event later than the
object's hour, or earlier than that, starts a new object). The key depends only on the events,
so writing the same offsets again writes the same key.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

from consumers.events import ConsumedEvent, parse_timestamp

HOUR = timedelta(hours=1)
# How much earlier than its object's hour an event may be and still join the object.
LATE = HOUR
# An event without a readable time (the relay refuses those; other producers may not).
NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)
UNKNOWN_CLUSTER = "unknown"
# --archive-format: the name's suffix of each.
SUFFIXES = {"jsonl": ".jsonl.gz", "parquet": ".parquet"}
_NAME = re.compile(
    r"^(?P<topic>.+)-(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)\.(?P<suffix>jsonl\.gz|parquet)$"
)
_PREFIX = re.compile(
    r"^cluster=(?P<cluster>[^/]+)/date=(?P<date>\d{4}-\d\d-\d\d)/hour=(?P<hour>\d\d)/$"
)


def event_time(event: ConsumedEvent) -> datetime:
    """The time an event is filed and replayed by: its stageTimestamp, else when the request
    was received, else ``NO_TIME``."""
    return (
        parse_timestamp(event.stage_timestamp)
        or parse_timestamp(event.request_received_timestamp)
        or NO_TIME
    )


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def cluster_of(event: ConsumedEvent) -> str:
    return event.cluster or UNKNOWN_CLUSTER


def cluster_prefix(cluster: str) -> str:
    # Percent-encoded: a cluster name must not add a level to the key.
    return f"cluster={quote(cluster, safe='')}/"


def hour_prefix(cluster: str, hour: datetime) -> str:
    return f"{cluster_prefix(cluster)}date={hour:%Y-%m-%d}/hour={hour:%H}/"


@dataclass(frozen=True)
class ObjectKey:
    """The parts of an archive object's key."""

    cluster: str
    hour: datetime
    topic: str
    partition: int
    first: int
    last: int
    format: str = "jsonl"

    @property
    def path(self) -> str:
        suffix = SUFFIXES[self.format]
        name = f"{self.topic}-{self.partition}-{self.first}-{self.last}{suffix}"
        return hour_prefix(self.cluster, self.hour) + name

    @classmethod
    def parse(cls, path: str) -> ObjectKey | None:
        """The key's parts, or None for a path that is not an archive object's."""
        directory, _, name = path.rpartition("/")
        prefix = _PREFIX.match(directory + "/")
        named = _NAME.match(name)
        if prefix is None or named is None:
            return None
        try:
            hour = datetime.strptime(f"{prefix['date']} {prefix['hour']}", "%Y-%m-%d %H")
        except ValueError:
            return None
        return cls(
            unquote(prefix["cluster"]),
            hour.replace(tzinfo=UTC),
            named["topic"],
            int(named["partition"]),
            int(named["first"]),
            int(named["last"]),
            "parquet" if named["suffix"] == "parquet" else "jsonl",
        )


@dataclass(frozen=True)
class Encoded:
    """An archive object ready to write: its body and the metadata it carries."""

    key: ObjectKey
    body: bytes
    count: int
    sha256: str
    # Not Content-Encoding: gzip for JSON lines, which has HTTP clients unzip what they get.
    content_type: str = "application/gzip"

    @property
    def metadata(self) -> dict[str, str]:
        """User metadata (``x-amz-meta-*`` on S3): what ``archive verify`` checks the body by."""
        return {
            "Content-Type": self.content_type,
            "count": str(self.count),
            "sha256": self.sha256,
            "first-offset": str(self.key.first),
            "last-offset": str(self.key.last),
        }


def encode(key: ObjectKey, lines: Sequence[bytes]) -> Encoded:
    """gzip of ``lines`` (each ending in a newline: the events of offsets ``key.first`` to
    ``key.last`` as published). The digest is of the uncompressed lines, so that a recompressed
    object still verifies."""
    text = b"".join(lines)
    # mtime=0: the same events give the same bytes, whenever they are written again.
    body = gzip.compress(text, compresslevel=6, mtime=0)
    return Encoded(key, body, len(lines), hashlib.sha256(text).hexdigest())


def decode_lines(body: bytes) -> list[bytes]:
    """The lines (without their newline) of a JSON lines object's body; raises OSError or
    EOFError for a body that is not gzip."""
    return gzip.decompress(body).splitlines()


def digest(lines: Sequence[bytes]) -> str:
    """What an object's ``sha256`` is of, whatever its format: its events as JSON lines."""
    return hashlib.sha256(b"".join(line + b"\n" for line in lines)).hexdigest()


def hours_between(since: datetime, until: datetime) -> Iterator[datetime]:
    """The hours whose prefixes can hold events of [since, until): late events are filed up to
    ``LATE`` after their own hour."""
    hour = hour_of(since)
    last = hour_of(until - timedelta(microseconds=1)) + LATE
    while hour <= last:
        yield hour
        hour += HOUR
