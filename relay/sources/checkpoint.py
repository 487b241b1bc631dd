"""A source's checkpoint: the position it has delivered up to, in a file that survives a crash.

Written by ``relay.sources.runner`` twice per chunk: before delivering it (``pending``: how many
events may reach Kafka twice if the process dies before the next write) and after Kafka
acknowledged it or the spool holds it (the new position, nothing pending). Each write replaces
the file whole (a temporary file, fsync, rename, fsync of the directory), so a crash leaves the
old checkpoint or the new one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from audit_common.errors import SourceError
from audit_common.files import fsync_dir, write_all
from relay.sources.base import Position


@dataclass(frozen=True)
class Checkpoint:
    """Where a source resumes, and how many events after it may already be in Kafka."""

    position: Position | None
    pending: int = 0


class CheckpointFile:
    """The checkpoint of one source in ``directory``/``name``.json. Raises SourceError when the
    directory cannot be written or the file read."""

    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / f"{name}.json"

    def load(self) -> Checkpoint:
        """The last checkpoint written, or an empty one on a first start."""
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return Checkpoint(None)
        except (OSError, orjson.JSONDecodeError) as exc:
            raise SourceError(f"cannot read the checkpoint {self.path}: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("pending", 0), int):
            raise SourceError(f"the checkpoint {self.path} is not one audit-source wrote")
        position = data.get("position")
        return Checkpoint(position if isinstance(position, dict) else None, data.get("pending", 0))

    def save(self, checkpoint: Checkpoint) -> None:
        """Replace the checkpoint durably."""
        data = orjson.dumps({"position": checkpoint.position, "pending": checkpoint.pending})
        temporary = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            raise SourceError(f"cannot write the checkpoint {self.path}: {exc}") from exc
