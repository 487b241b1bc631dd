"""``audit-source file``: kube-apiserver's ``--audit-log-path`` file, followed through rotation.

The apiserver writes the log through lumberjack (gopkg.in/natefinch/lumberjack.v2): when the
file reaches ``--audit-log-maxsize`` it is closed, renamed ``<name>-<time><ext>`` in its
directory (``audit-2026-12-07T23-59-00.000.log``, UTC), and a new file is created under the
name; with ``--audit-log-compress`` a goroutine then writes ``<rotated>.gz`` and removes the
rotated file; ``--audit-log-maxbackup``/``maxage`` remove the oldest.

A position names a file by its first line (its SHA-256 and length: an auditID makes it unique,
and it survives the rename and the gzip) or, before it has one, by its inode; ``offset`` counts
the bytes of whole lines read (of the decompressed text for a ``.gz``), and ``done`` says a
rotated file was read to its end. Only whole lines are delivered: a last line the apiserver is
still writing is waited for; a rotated file's unfinished last line is delivered as it is (and
dead-lettered, not being an event).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import io
import logging
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from audit_common.errors import ConfigError, SourceError
from audit_common.options import EnvArgumentParser
from relay.sources.base import Chunk, OnError, Position, Source

log = logging.getLogger(__name__)

# Bytes read at once: a chunk holds the whole lines among them.
CHUNK_BYTES = 1 << 20
_TIME = r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}"


@dataclass(frozen=True)
class _File:
    """One file of the log: a rotated one (``rotated`` is its time, as named) or the live one."""

    path: Path
    rotated: str | None = None

    @property
    def gz(self) -> bool:
        return self.path.suffix == ".gz"


def listing(path: Path) -> list[_File]:
    """The log's files, oldest first: the rotated ones by their time, then the live one. A
    rotated file being compressed (both it and its ``.gz`` there) is read uncompressed."""
    stem, ext = path.stem, path.suffix
    pattern = re.compile(rf"{re.escape(stem)}-({_TIME}){re.escape(ext)}(\.gz)?")
    found: dict[str, Path] = {}
    try:
        names = os.listdir(path.parent)
    except OSError as exc:
        raise SourceError(f"cannot list {path.parent}: {exc}") from exc
    for name in names:
        match = pattern.fullmatch(name)
        if match is not None and (match[2] is None or match[1] not in found):
            found[match[1]] = path.parent / name
    return [*(_File(found[time], time) for time in sorted(found)), _File(path)]


def _head_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_Stream = gzip.GzipFile | io.BufferedReader


def _open(file: _File) -> _Stream:
    return gzip.GzipFile(file.path, "rb") if file.gz else open(file.path, "rb")


def matches(file: _File, position: Position) -> bool:
    """Whether ``file`` is the one ``position`` names. Raises OSError."""
    head, length = position.get("head"), position.get("head_len", 0)
    if head is None:
        return not file.gz and file.path.stat().st_ino == position.get("inode")
    with _open(file) as stream:
        return bool(_head_digest(stream.read(length)) == head)


def locate(files: list[_File], position: Position) -> int | None:
    """The index in ``files`` of the file ``position`` names, or None when it is gone."""
    for index, file in enumerate(files):
        try:
            if matches(file, position):
                return index
        except (OSError, EOFError, gzip.BadGzipFile):
            continue  # removed meanwhile, or a .gz not whole: not the one
    return None


class _Reader:
    """An open file of the log, read in whole lines from ``offset``."""

    def __init__(self, file: _File, offset: int, head: str | None, head_len: int) -> None:
        self.file = file
        self.stream = _open(file)
        try:
            self.inode = os.fstat(self.stream.fileno()).st_ino
            self.stream.seek(offset)
        except (OSError, EOFError) as exc:
            self.stream.close()
            raise SourceError(f"cannot read {file.path} from byte {offset}: {exc}") from exc
        self.offset = offset
        self.head, self.head_len = head, head_len
        self.pending = b""

    def lines(self, *, final: bool) -> tuple[list[bytes], bool]:
        """The whole lines read next (without their line breaks, empty ones skipped) and whether
        the end was reached; with ``final`` an unfinished last line at the end too."""
        try:
            data = self.stream.read(CHUNK_BYTES)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise SourceError(f"cannot read {self.file.path}: {exc}") from exc
        at_end = len(data) < CHUNK_BYTES
        data = self.pending + data
        cut = data.rfind(b"\n") + 1
        if final and at_end:
            cut = len(data)
        whole, self.pending = data[:cut], data[cut:]
        if self.head is None and self.offset == 0 and whole:
            first = whole.find(b"\n") + 1 or len(whole)
            self.head, self.head_len = _head_digest(whole[:first]), first
        self.offset += len(whole)
        return [line for line in whole.split(b"\n") if line.strip()], at_end

    def position(self, *, done: bool = False) -> Position:
        return {
            "inode": self.inode,
            "head": self.head,
            "head_len": self.head_len,
            "offset": self.offset,
            "done": done,
        }

    def close(self) -> None:
        self.stream.close()


class FileSource(Source):
    """Follows the audit log file at ``path`` and the files it is rotated into."""

    kind: ClassVar[str] = "file"

    def __init__(self, path: Path, from_start: bool, poll_interval: float) -> None:
        self.path = path
        self.from_start = from_start
        self.poll_interval = poll_interval

    @classmethod
    def add_arguments(cls, parser: EnvArgumentParser) -> None:
        parser.add_option("--path", help="file: the apiserver's --audit-log-path (required)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FileSource:
        if not args.path:
            raise ConfigError("audit-source file needs --path (the apiserver's --audit-log-path)")
        return cls(Path(args.path), args.from_start, args.poll_interval)

    async def read(
        self, position: Position | None, on_error: OnError
    ) -> AsyncGenerator[Chunk, None]:
        while True:
            reader = await self._open_next(position)
            if reader is None:
                await asyncio.sleep(self.poll_interval)  # the live file is not there yet
                continue
            try:
                async for chunk in self._read_file(reader):
                    position = chunk.position
                    yield chunk
            finally:
                reader.close()

    async def _open_next(self, position: Position | None) -> _Reader | None:
        """The file to read after ``position``, opened where reading resumes; None while the
        live file does not exist."""
        files = await asyncio.to_thread(listing, self.path)
        if position is None:
            if self.from_start:
                return await asyncio.to_thread(self._opened, files[0], 0, None, 0)
            return await asyncio.to_thread(self._at_end, files[-1])
        index = await asyncio.to_thread(locate, files, position)
        if index is None:
            log.warning(
                "the checkpointed file (inode %s) is gone from %s (removed by "
                "--audit-log-maxbackup or maxage?): reading from the oldest file there; lines "
                "of removed files are lost",
                position.get("inode"),
                self.path.parent,
            )
            return await asyncio.to_thread(self._opened, files[0], 0, None, 0)
        if position.get("done") and index + 1 < len(files):
            return await asyncio.to_thread(self._opened, files[index + 1], 0, None, 0)
        return await asyncio.to_thread(
            self._opened,
            files[index],
            int(position.get("offset", 0)),
            position.get("head"),
            int(position.get("head_len", 0)),
        )

    @staticmethod
    def _opened(file: _File, offset: int, head: str | None, head_len: int) -> _Reader | None:
        try:
            return _Reader(file, offset, head, head_len)
        except FileNotFoundError:
            return None

    def _at_end(self, file: _File) -> _Reader | None:
        """The live file opened after its last whole line: where a first start without
        ``--from-start`` begins."""
        reader = self._opened(file, 0, None, 0)
        if reader is None:
            return None
        while True:
            _, at_end = reader.lines(final=False)  # also records the file's first line
            if at_end:
                return reader

    async def _read_file(self, reader: _Reader) -> AsyncIterator[Chunk]:
        """The chunks of one file until it is done: a rotated file to its end; the live one
        until it has been rotated and read to its end."""
        live = reader.file.rotated is None
        caught_up = False
        while True:
            rotated = not live or await asyncio.to_thread(self._rotated, reader)
            lines, at_end = await asyncio.to_thread(reader.lines, final=rotated)
            if lines or (at_end and rotated):
                caught_up = False
                newest = await asyncio.to_thread(self._newest)
                done = at_end and rotated
                yield Chunk(lines, reader.position(done=done), newest, caught_up=at_end and live)
                if done:
                    return
            elif at_end:
                if not caught_up:  # once per catching up: the lag is 0, the checkpoint current
                    caught_up = True
                    yield Chunk([], reader.position(), None, caught_up=True)
                await asyncio.sleep(self.poll_interval)

    def _rotated(self, reader: _Reader) -> bool:
        """Whether the live file ``reader`` reads is no longer under the log's name."""
        try:
            return self.path.stat().st_ino != reader.inode
        except FileNotFoundError:
            return True

    def _newest(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except FileNotFoundError:
            return None
