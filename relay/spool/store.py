"""The relay's durable disk spool: where a request's events wait while Kafka does not answer.

Each worker appends to segments in its own directory under ``--spool-dir``
(``relay.spool.directory``) and fsyncs before ``append`` returns, so a 200 sent after it
survives SIGKILL and power loss. Appends of concurrent requests share that fsync (group commit):
those that arrive while a write is in progress are written together by the next one, in one
``write`` and one ``fsync``, since an fsync costs milliseconds whatever it carries.
``replay`` hands the records back in the order they were appended, and deletes a segment only
once every record of it was acknowledged. A restarted worker replays its own leftovers, and
``replay`` also adopts the directories that dead workers left.

Blocking file I/O runs in a thread (``asyncio.to_thread``) so that the event loop keeps serving;
spool state is only changed on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from audit_common.errors import Overloaded
from audit_common.resource import AsyncResource
from relay.events.records import OutboundRecord
from relay.spool import frames
from relay.spool.directory import (
    Segment,
    SpoolDir,
    claim_home,
    create_segment,
    orphan_paths,
    try_claim,
    write_frames,
)

log = logging.getLogger(__name__)

Publish = Callable[[Sequence[OutboundRecord]], Awaitable[None]]

DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024
DEFAULT_REPLAY_BATCH_BYTES = 1024 * 1024
_RATE_WINDOW_S = 10.0


@dataclass(frozen=True)
class SpoolStats:
    """What the spool holds, for metrics and log lines; ages and rates in seconds. ``commits``
    counts the writes (each one fsync) since start, however many appends each carried."""

    bytes: int
    events: int
    oldest_age_s: float
    replayed_events: int
    replay_rate: float
    commits: int
    corrupt_bytes: int = 0


@dataclass(eq=False)
class _Waiting:
    """The records of one ``append``, until a group write settles ``done``."""

    records: Sequence[OutboundRecord]
    size: int
    done: asyncio.Future[None]


class Spool(AsyncResource):
    """A per-worker, append-only, fsynced store of records that Kafka has not acknowledged.

    Owned by the relay's delivery layer: it calls ``append`` for the records of a request that
    Kafka did not take, and runs ``replay`` from a background task. ``start``/``stop`` are
    idempotent; the class is also an async context manager.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        replay_batch_bytes: int = DEFAULT_REPLAY_BATCH_BYTES,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.replay_batch_bytes = replay_batch_bytes
        self._home: SpoolDir | None = None
        self._adopted: list[SpoolDir] = []
        self._active: Segment | None = None
        self._active_fd: int | None = None
        self._lock = asyncio.Lock()
        # Appends not yet written, oldest first, and their bytes with those being written.
        self._waiting: deque[_Waiting] = deque()
        self._unwritten = 0
        self._writer: asyncio.Task[None] | None = None
        self._commits = 0
        self._corrupt_bytes = 0
        self._replayed = 0
        self._recent: deque[tuple[float, int]] = deque()

    async def start(self) -> None:
        """Claim a worker directory and recover what it holds. Raises ConfigError."""
        if self._home is None:
            self._home = await asyncio.to_thread(claim_home, self.root)
            self._corrupt_bytes += self._home.corrupt_bytes
            log.info("spool %s claimed (%s)", self._home.path, self._describe())

    async def stop(self) -> None:
        """Write what appends wait for, close the active segment and release every directory;
        the data stays for next time."""
        if self._writer is not None:
            await asyncio.wait([self._writer])
        async with self._lock:
            self._seal()
            for directory in [*self._adopted, *([self._home] if self._home else [])]:
                directory.release()
            self._adopted.clear()
            self._home = None

    @property
    def empty(self) -> bool:
        """True when nothing waits for replay (the delivery layer then publishes directly)."""
        return not self._unwritten and not any(segment.events for segment in self._segments())

    async def append(self, records: Sequence[OutboundRecord]) -> None:
        """Store ``records`` durably (written and fsynced) before returning.

        Called by the delivery layer for the records of one request; concurrent calls share one
        write and fsync. Raises Overloaded, with none of ``records`` stored, when they would take
        the spool over ``max_bytes`` (counting what other appends wait to write: this append
        alone is refused), or when the disk refuses the write that carries them (every append
        of that write fails). A cancelled caller does not cut the write short: it completes,
        and is replayed.
        """
        self._require_home()
        size = sum(frames.frame_size(record) for record in records)
        held = sum(segment.size for segment in self._segments()) + self._unwritten
        if held + size > self.max_bytes:
            raise Overloaded(f"spool full: {held} + {size} bytes over {self.max_bytes}")
        waiting = _Waiting(records, size, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._unwritten += size
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting(), name="spool-writer")
        await asyncio.shield(waiting.done)

    async def _write_waiting(self) -> None:
        """Write what waits, a group at a time, until nothing does; settle each append."""
        while self._waiting:
            group = [self._waiting.popleft()]
            size = group[0].size
            # A group stays within a segment's size, so that segments stay near it.
            while self._waiting and size + self._waiting[0].size <= self.segment_bytes:
                size += self._waiting[0].size
                group.append(self._waiting.popleft())
            try:
                await self._write_group(group, size)
            except Exception as exc:
                self._settle(group, exc)
            except BaseException:
                # Cancelled, as when the loop closes: nothing is left to write what waits.
                self._settle([*group, *self._waiting], Overloaded("spool writer cancelled"))
                self._waiting.clear()
                raise
            else:
                self._settle(group, None)

    def _settle(self, group: Sequence[_Waiting], error: Exception | None) -> None:
        """Answer the appends of ``group``: written (their bytes are now in a segment), or not."""
        for waiting in group:
            self._unwritten -= waiting.size
            if error is None:
                waiting.done.set_result(None)
            else:
                waiting.done.set_exception(error)

    async def _write_group(self, group: list[_Waiting], size: int) -> None:
        """Append the frames of ``group`` to the active segment with one write and one fsync.

        Raises Overloaded when the disk refuses them (the segment is then cut back and sealed).
        """
        async with self._lock:
            home = self._require_home()
            if self._active is not None and self._active.size + size > self.segment_bytes:
                self._seal()
            now_ms = time.time_ns() // 1_000_000
            try:
                if self._active is None or self._active_fd is None:
                    path = home.next_segment_path()
                    self._active_fd = await asyncio.to_thread(create_segment, path)
                    self._active = Segment(path)
                    home.segments.append(self._active)
                batches = [waiting.records for waiting in group]
                written = await asyncio.to_thread(_write, self._active_fd, batches, now_ms)
            except OSError as exc:
                # Should cutting back a partial write have failed too, later appends must not
                # follow the partial frame: they go to a new segment.
                self._seal()
                raise Overloaded(f"cannot write the spool: {exc}") from exc
            self._commits += 1
            self._active.size += written
            self._active.events += sum(len(batch) for batch in batches)
            if self._active.oldest_ms is None:
                self._active.oldest_ms = now_ms

    async def replay(self, publish: Publish, *, probe: bool = False) -> int:
        """Publish every stored record, oldest first, and delete each segment once all is acked.

        Called by the delivery layer's background replay task when Kafka may be back. Returns the
        number of records published. Raises whatever ``publish`` raises (KafkaUnavailable); what
        was acknowledged before that is not published again by this process. With ``probe``,
        the first call to ``publish`` carries one record: while Kafka is still down, the
        producer then holds (and later delivers, a duplicate) one record rather than a batch.
        """
        self._require_home()
        await self._adopt_orphans()
        replayed = 0
        while (found := await self._next_segment()) is not None:
            directory, segment = found
            replayed += await self._replay_segment(segment, publish, probe and not replayed)
            directory.segments.remove(segment)
            await asyncio.to_thread(_unlink, segment.path)
            if directory is not self._home and not directory.segments:
                self._adopted.remove(directory)
                directory.release()
        return replayed

    def stats(self) -> SpoolStats:
        """A snapshot of the spool; cheap, called by metrics collection and log lines."""
        segments = list(self._segments())
        oldest = min((s.oldest_ms for s in segments if s.oldest_ms is not None), default=None)
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - _RATE_WINDOW_S:
            self._recent.popleft()
        return SpoolStats(
            bytes=sum(segment.size for segment in segments),
            events=sum(segment.events for segment in segments),
            oldest_age_s=max(0.0, time.time() - oldest / 1000) if oldest is not None else 0.0,
            replayed_events=self._replayed,
            replay_rate=sum(count for _, count in self._recent) / _RATE_WINDOW_S,
            commits=self._commits,
            corrupt_bytes=self._corrupt_bytes,
        )

    def _describe(self) -> str:
        stats = self.stats()
        return f"{stats.events} events, {stats.bytes} bytes, oldest {stats.oldest_age_s:.0f}s"

    def _require_home(self) -> SpoolDir:
        if self._home is None:
            raise RuntimeError("Spool used before start() or after stop()")
        return self._home

    def _segments(self) -> list[Segment]:
        homes = [self._home] if self._home else []
        return [segment for d in [*self._adopted, *homes] for segment in d.segments]

    def _seal(self) -> None:
        """End the active segment: later appends go to a new one, and replay may take it."""
        if self._active_fd is not None:
            os.close(self._active_fd)
        self._active = self._active_fd = None

    async def _adopt_orphans(self) -> None:
        skip = {d.path for d in self._adopted} | {self._require_home().path}
        for path in await asyncio.to_thread(orphan_paths, self.root, skip):
            try:
                claimed = await asyncio.to_thread(try_claim, path)
            except OSError as exc:
                log.error("cannot adopt spool directory %s: %s", path, exc)
                continue
            if claimed is not None:
                self._adopted.append(claimed)
                self._corrupt_bytes += claimed.corrupt_bytes
                log.info("spool %s adopted from a stopped worker", path)

    async def _next_segment(self) -> tuple[SpoolDir, Segment] | None:
        """The oldest sealed segment; seals the active one when nothing else is left."""
        for directory in [*self._adopted, self._require_home()]:
            if directory.segments and directory.segments[0] is not self._active:
                return directory, directory.segments[0]
        async with self._lock:
            home = self._require_home()
            if self._active is None or not self._active.events:
                return None
            self._seal()
            return home, home.segments[0]

    async def _replay_segment(self, segment: Segment, publish: Publish, probe: bool) -> int:
        data = await asyncio.to_thread(_read_from, segment.path, segment.acked)
        items: list[frames.SpooledRecord] = []
        scan = frames.Scan()
        for body, end in frames.frames(data, scan):
            try:
                items.append(frames.decode(body, segment.acked + end))
            except frames.CorruptFrame as exc:
                segment.events -= 1
                log.error("spool segment %s: skipping an unreadable record: %s", segment.path, exc)
        self._count_damage(segment, scan)
        if scan.end < len(data):
            log.error(
                "spool segment %s: %d unreadable bytes at offset %d dropped",
                segment.path,
                len(data) - scan.end,
                segment.acked + scan.end,
            )
        start = batch_bytes = 0
        for index, item in enumerate(items, 1):
            batch_bytes += item.record.size
            if batch_bytes >= self.replay_batch_bytes or index == len(items) or probe:
                await publish([spooled.record for spooled in items[start:index]])
                self._acknowledged(segment, items[start:index], items[index : index + 1])
                start, batch_bytes, probe = index, 0, False
        return len(items)

    def _count_damage(self, segment: Segment, scan: frames.Scan) -> None:
        """Count and log the damaged ranges ``scan`` skipped in ``segment`` (read from its
        ``acked`` offset) that its recovery had not: damage done since, as to the active one."""
        found = {(segment.acked + start, segment.acked + end) for start, end in scan.skipped}
        new = sorted(found - segment.damaged)
        if new:
            segment.damaged.update(new)
            self._corrupt_bytes += sum(end - start for start, end in new)
            log.error(
                "spool segment %s: skipped %d damaged bytes (%s)",
                segment.path,
                sum(end - start for start, end in new),
                ", ".join(f"{start}-{end}" for start, end in new),
            )

    def _acknowledged(
        self,
        segment: Segment,
        done: list[frames.SpooledRecord],
        following: list[frames.SpooledRecord],
    ) -> None:
        segment.acked = done[-1].end
        segment.events -= len(done)
        segment.oldest_ms = following[0].spooled_ms if following else None
        self._replayed += len(done)
        self._recent.append((time.monotonic(), len(done)))


def _write(fd: int, batches: Sequence[Sequence[OutboundRecord]], now_ms: int) -> int:
    """Frame the records of ``batches`` and append them with ``write_frames``; the bytes written.

    Runs in a thread: encoding the frames of a large request (copies, checksums) takes a while.
    """
    data = b"".join(frames.encode(record, now_ms) for batch in batches for record in batch)
    write_frames(fd, data)
    return len(data)


def _read_from(path: Path, offset: int) -> bytes:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read()


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
