"""Writing files so that a crash or a full disk leaves only whole records behind.

Shared by the relay's spool (``relay.spool.store.directory``) and the consumers' stream sinks
(``consumers.sinks.output``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``, however many ``os.write`` calls it takes. Raises OSError."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def append(fd: int, data: bytes, *, sync: bool = False) -> None:
    """Append ``data`` to a regular file (and fsync it when ``sync``).

    On OSError (a full disk), cut the file back to where it ended, so that no part of ``data``
    stays for later appends to follow, then raise.
    """
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        write_all(fd, data)
        if sync:
            os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (files created, renamed, removed) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
