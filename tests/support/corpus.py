"""Falco's k8s_audit test traces in ../shared/corpus, for the tests whose point is a recorded
trace file. CI has them beside the clone; a clone alone has not, and those tests are skipped
there with the path they looked in. Tests that only need events of some shape take them from
tests.support.events instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.kafka import REPO

CORPUS_DIR = REPO.parent / "shared" / "corpus" / "falco-k8s-audit"


def corpus_dir() -> Path:
    """The traces' directory; skips the calling test when it is not there."""
    if not CORPUS_DIR.is_dir():
        pytest.skip(f"Falco's k8s audit traces are not at {CORPUS_DIR}")
    return CORPUS_DIR


def corpus_events(*, valid_only: bool = True) -> list[dict[str, Any]]:
    """Every event of the traces, one per JSON line; ``valid_only`` leaves out the broken one."""
    events: list[dict[str, Any]] = []
    for path in sorted(corpus_dir().glob("*.json")):
        for line in path.read_bytes().splitlines():
            if line.strip():
                events.append(orjson.loads(line))
    if valid_only:
        events = [event for event in events if isinstance(event.get("auditID"), str)]
    return events


def corpus_file_events(name: str) -> list[dict[str, Any]]:
    """The events of one trace file."""
    return [orjson.loads(line) for line in (corpus_dir() / name).read_bytes().splitlines() if line]
