"""One worker's directory of spool segments: claiming it, and recovering it after a crash.

Under ``--spool-dir`` each relay worker owns one subdirectory ``worker-<n>``, held with an
exclusive ``fcntl.flock`` on its ``lock`` file for the life of the process. The kernel drops the
lock when the process dies, however it dies, so an unlocked directory with segments in it is
what a dead worker left: another worker may claim it and replay it.

Every function here blocks on the file system; ``relay.spool.store`` calls them in a thread.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from audit_common.errors import ConfigError
from audit_common.files import append, fsync_dir
from relay.spool import frames

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".seg"
LOCK_NAME = "lock"
DIR_PREFIX = "worker-"
_MAX_WORKER_DIRS = 4096


@dataclass
class Segment:
    """An append-only file of frames; ``acked`` bytes at its head are already in Kafka;
    ``damaged`` holds the (start, end) offsets of the damaged ranges already counted."""

    path: Path
    size: int = 0
    events: int = 0
    oldest_ms: int | None = None
    acked: int = 0
    damaged: set[tuple[int, int]] = field(default_factory=set)

    @property
    def seq(self) -> int:
        return int(self.path.stem)


@dataclass
class SpoolDir:
    """A claimed worker directory and its segments, oldest first; the lock is held until release.
    ``corrupt_bytes`` counts the damaged bytes its recovery skipped."""

    path: Path
    lock_fd: int
    segments: deque[Segment] = field(default_factory=deque)
    corrupt_bytes: int = 0

    def next_segment_path(self) -> Path:
        last = max((segment.seq for segment in self.segments), default=0)
        return self.path / f"{last + 1:020d}{SEGMENT_SUFFIX}"

    def release(self) -> None:
        """Close the lock file, which drops the lock. Called once, by whoever claimed the dir."""
        os.close(self.lock_fd)


def claim_home(root: Path) -> SpoolDir:
    """Claim the first worker directory under ``root`` that no live process holds, recovered.

    Called by ``Spool.start``. Raises ConfigError when ``root`` cannot be used.
    """
    try:
        _make_durable_dir(root, parents=True)
        for index in range(_MAX_WORKER_DIRS):
            path = root / f"{DIR_PREFIX}{index}"
            _make_durable_dir(path)
            claimed = try_claim(path)
            if claimed is not None:
                return claimed
    except OSError as exc:
        raise ConfigError(f"--spool-dir {root}: {exc}") from exc
    raise ConfigError(f"--spool-dir {root}: all {_MAX_WORKER_DIRS} worker directories are locked")


def orphan_paths(root: Path, skip: set[Path]) -> list[Path]:
    """Worker directories under ``root`` other than ``skip`` that hold segments, by name."""
    try:
        paths = sorted(p for p in root.iterdir() if p.name.startswith(DIR_PREFIX) and p not in skip)
        return [path for path in paths if any(path.glob(f"*{SEGMENT_SUFFIX}"))]
    except OSError as exc:
        log.warning("cannot list spool directory %s: %s", root, exc)
        return []


def try_claim(path: Path) -> SpoolDir | None:
    """Lock ``path`` and recover its segments, or None when a live process holds it.

    Raises OSError when the directory cannot be read or repaired.
    """
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        segments, corrupt_bytes = _recover(path)
        return SpoolDir(path, fd, deque(segments), corrupt_bytes)
    except BaseException:
        os.close(fd)
        raise


def _recover(path: Path) -> tuple[list[Segment], int]:
    """Scan each segment left in ``path``: skip damaged frames, cut torn tails, delete empty
    segments, count the rest. Returns the segments and the damaged bytes skipped."""
    segments = []
    corrupt_bytes = 0
    for segment_path in sorted(path.glob(f"*{SEGMENT_SUFFIX}")):
        data = segment_path.read_bytes()
        segment = Segment(segment_path)
        scan = frames.Scan()
        for body, _ in frames.frames(data, scan):
            if segment.oldest_ms is None:
                segment.oldest_ms = frames.spooled_ms(body)
            segment.events += 1
        segment.size = scan.end
        segment.damaged.update(scan.skipped)
        if scan.skipped:
            # The frames around them were written and fsynced: only the damaged ones are lost.
            corrupt_bytes += scan.skipped_bytes
            log.error(
                "spool segment %s: skipped %d damaged bytes (%s), kept %d records",
                segment_path,
                scan.skipped_bytes,
                ", ".join(f"{start}-{end}" for start, end in scan.skipped),
                segment.events,
            )
        if segment.size < len(data):
            # Only the last append can be cut short, and it was never acknowledged.
            log.warning(
                "spool segment %s: dropping a torn tail of %d bytes after %d records",
                segment_path,
                len(data) - segment.size,
                segment.events,
            )
            with segment_path.open("r+b") as file:
                file.truncate(segment.size)
                os.fsync(file.fileno())
        if segment.events:
            segments.append(segment)
        else:
            segment_path.unlink()
    if segments:
        log.info(
            "spool %s: recovered %d segments with %d events",
            path,
            len(segments),
            sum(s.events for s in segments),
        )
    return segments, corrupt_bytes


def create_segment(path: Path) -> int:
    """Create a new segment file and make its name durable; returns a descriptor for appends."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
    fsync_dir(path.parent)
    return fd


def write_frames(fd: int, data: bytes) -> None:
    """Append ``data`` to a segment and fsync it. On OSError, cut the segment back, then raise:
    no half-written frame stays in the middle of the segment for later appends to follow."""
    append(fd, data, sync=True)


def _make_durable_dir(path: Path, *, parents: bool = False) -> None:
    """Create ``path`` if missing (another worker may at the same time) and fsync its parent:
    segments are fsynced in their directory, whose own entry must last a power loss too."""
    if path.is_dir():
        return
    path.mkdir(parents=parents, exist_ok=True)
    fsync_dir(path.parent)
