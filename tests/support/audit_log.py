"""An audit log written as kube-apiserver's log backend writes it through lumberjack: one
compact Event per line, kind and apiVersion first; rotation renames the file
``<name>-<UTC time><ext>`` and creates a new one; compression writes ``<rotated>.gz`` and then
removes the rotated file."""

from __future__ import annotations

import gzip
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from audit_common.samples import sample_events


def log_lines(count: int, *, seed: int) -> list[bytes]:
    """``count`` events as lines of an audit.log (with their line breaks)."""
    return [
        orjson.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", **event}) + b"\n"
        for event in sample_events(count, seed=seed)
    ]


def identity(value: bytes | dict[str, Any]) -> tuple[str, str]:
    """What tells the events of a log apart: auditID and stage (an exec logs two stages)."""
    event = orjson.loads(value) if isinstance(value, bytes) else value
    return event["auditID"], event["stage"]


class LumberjackLog:
    """The file at ``path`` and its rotated files, as lumberjack leaves them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._clock = datetime(2026, 12, 7, 23, 0, tzinfo=UTC)
        path.touch()

    def write(self, data: bytes) -> None:
        with self.path.open("ab") as file:
            file.write(data)

    def rotate(self, *, compress: bool = False) -> Path:
        """Rename the file as lumberjack does, create the new one; return the rotated path."""
        self._clock += timedelta(seconds=1)
        stamp = self._clock.strftime("%Y-%m-%dT%H-%M-%S.000")
        rotated = self.path.with_name(f"{self.path.stem}-{stamp}{self.path.suffix}")
        self.path.rename(rotated)
        self.path.touch()
        if compress:
            gz = rotated.with_name(rotated.name + ".gz")
            with rotated.open("rb") as source, gzip.open(gz, "wb") as target:
                shutil.copyfileobj(source, target)
            rotated.unlink()
            return gz
        return rotated
