"""The byte stream that the csv and jsonl sinks append to: stdout or a file, with size rotation.

Writes and fsyncs run in a worker thread, so a slow disk or a reader that stops reading stdout
does not stall the event loop (and with it the Kafka heartbeats).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from audit_common.errors import ConfigError, SinkError
from audit_common.files import append, fsync_dir, write_all
from audit_common.options import EnvArgumentParser, positive_int

_WINDOW = 65536


@dataclass(frozen=True)
class OutputSettings:
    """Where a stream sink writes: ``path`` None means stdout; rotation only applies to files."""

    path: Path | None = None
    rotate_bytes: int | None = None
    keep: int = 5


def add_output_arguments(parser: EnvArgumentParser) -> None:
    """The flags shared by every sink that writes a stream (csv, jsonl)."""
    add = parser.add_option
    add("--output", metavar="FILE", help="file the csv/jsonl sink appends to (default: stdout)")
    add(
        "--rotate-bytes",
        type=positive_int,
        metavar="N",
        help="with --output: start a new file before one would grow past N bytes",
    )
    add(
        "--keep",
        type=int,
        default=5,
        metavar="N",
        help="with --rotate-bytes: rotated files kept (FILE.1 newest ... FILE.N)",
    )


def output_from_args(args: argparse.Namespace) -> OutputSettings:
    """Raises ConfigError when rotation is asked for without a file, or when ``--output`` names
    a directory or a file in a directory that does not exist: found at start, before the
    consumer joins its group, not as a sink failure retried without end."""
    path = Path(args.output) if args.output and args.output != "-" else None
    if args.rotate_bytes is not None and path is None:
        raise ConfigError("--rotate-bytes needs --output FILE: stdout cannot be rotated")
    if args.keep < 0:
        raise ConfigError(f"--keep must be 0 or more, got {args.keep}")
    if path is not None:
        if path.is_dir():
            raise ConfigError(f"--output {path} is a directory; name a file in it")
        if not path.parent.is_dir():
            raise ConfigError(f"--output {path}: directory {path.parent} does not exist")
    return OutputSettings(path, args.rotate_bytes, args.keep)


class OutputStream:
    """Appends whole records (lines) to stdout or a file; ``flush`` makes them durable.

    Owned by one sink, which calls ``open`` / ``write`` / ``flush`` / ``close`` in that order.
    ``header`` is written at the start of every new or empty file (and once on stdout);
    ``quote`` is the quote character of records that may hold line feeds inside quotes (CSV).
    All methods raise SinkError on an OSError.
    """

    def __init__(
        self, settings: OutputSettings, header: bytes = b"", quote: bytes | None = None
    ) -> None:
        self.settings = settings
        self.header = header
        self.quote = quote
        self._fd: int | None = None
        self._size = 0
        self._fsync = False

    async def open(self) -> None:
        if self._fd is None:
            await self._in_thread(self._open)

    async def write(self, records: Sequence[bytes]) -> None:
        await self._in_thread(self._write, records)

    async def flush(self) -> None:
        await self._in_thread(self._sync)

    async def close(self) -> None:
        if self._fd is not None:
            await self._in_thread(self._close)

    async def _in_thread(self, function: Callable[..., None], *args: object) -> None:
        try:
            await asyncio.to_thread(function, *args)
        except OSError as exc:
            where = self.settings.path or "stdout"
            raise SinkError(f"cannot write {where}: {exc}") from exc

    def _open(self) -> None:
        path = self.settings.path
        if path is None:
            self._fd = sys.stdout.fileno()
            self._fsync = stat.S_ISREG(os.fstat(self._fd).st_mode)
            self._write_raw(self.header)
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._fd, self._fsync = fd, True
        self._size = self._drop_partial_record(fd)
        if self._size == 0:
            self._write_raw(self.header)

    def _drop_partial_record(self, fd: int) -> int:
        """Cut a record left half-written by a crash; it was never committed, so it comes again.

        A record ends with a line feed; with ``quote`` (CSV), only with one outside quotes, as
        RFC 4180 reads it: a name may hold line feeds, and every quote character of whole
        records comes in pairs, so the line feeds that end records are those with an even count
        of quotes before them.
        """
        size = os.fstat(fd).st_size
        if size == 0:
            return size
        end = _last_record_end(fd, size, self.quote)
        if end < size:
            os.ftruncate(fd, end)
        return end

    def _write(self, records: Sequence[bytes]) -> None:
        limit = self.settings.rotate_bytes
        pending: list[bytes] = []
        pending_size = 0
        for record in records:
            used = self._size + pending_size
            if limit and used > len(self.header) and used + len(record) > limit:
                self._write_raw(b"".join(pending))
                pending, pending_size = [], 0
                self._rotate()
            pending.append(record)
            pending_size += len(record)
        self._write_raw(b"".join(pending))

    def _write_raw(self, data: bytes) -> None:
        if self._fd is None:  # a rotation failed between closing and reopening: retried here
            self._open()
            assert self._fd is not None
        if self.settings.path is not None:
            append(self._fd, data)  # a write cut short is cut back: the retry appends whole
        else:
            write_all(self._fd, data)  # stdout: a pipe, or a file that is not ours to cut
        self._size += len(data)

    def _sync(self) -> None:
        if self._fd is not None and self._fsync:
            os.fsync(self._fd)

    def _rotate(self) -> None:
        """FILE -> FILE.1 -> ... -> FILE.<keep>; the oldest beyond ``keep`` is removed."""
        path = self.settings.path
        assert path is not None
        self._sync()
        self._close()
        keep = self.settings.keep
        rotated = [path.with_name(f"{path.name}.{index}") for index in range(keep + 1)]
        rotated[0] = path
        if keep == 0:
            path.unlink()
        else:
            rotated[-1].unlink(missing_ok=True)
            for older, newer in zip(reversed(rotated[1:]), reversed(rotated[:-1]), strict=True):
                if newer.exists():
                    newer.rename(older)
        fsync_dir(path.parent)
        self._open()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None and self.settings.path is not None:
            os.close(fd)
        self._size = 0


def _last_record_end(fd: int, size: int, quote: bytes | None) -> int:
    """The offset just past the last whole record of the file ``fd`` of ``size`` bytes: after
    its last line feed, or with ``quote`` its last line feed outside quotes; 0 when none."""
    end = size
    while end > 0:
        start = max(0, end - _WINDOW)
        window = os.pread(fd, end - start, start)
        if quote is None:
            found = window.rfind(b"\n")
            if found >= 0:
                return start + found + 1
        else:
            # The quotes before the window say whether it starts inside quotes.
            inside = _count(fd, start, quote) % 2 == 1
            last = -1
            for match in re.finditer(re.escape(quote) + b"|\n", window):
                if match[0] == quote:
                    inside = not inside
                elif not inside:
                    last = match.start()
            if last >= 0:
                return start + last + 1
        end = start
    return 0


def _count(fd: int, end: int, byte: bytes) -> int:
    """How many times ``byte`` occurs in the first ``end`` bytes of ``fd``."""
    count = offset = 0
    while offset < end:
        chunk = os.pread(fd, min(1 << 20, end - offset), offset)
        if not chunk:
            break
        count += chunk.count(byte)
        offset += len(chunk)
    return count
