"""The real audit events in ../shared/corpus, as kube-apiserver would post them."""

from __future__ import annotations

from typing import Any

import orjson

from tests.support.kafka import REPO

CORPUS_DIR = REPO.parent / "shared" / "corpus" / "falco-k8s-audit"


def corpus_events(*, valid_only: bool = True) -> list[dict[str, Any]]:
    """Every event of the corpus, one per JSON line; ``valid_only`` leaves out the broken one."""
    events: list[dict[str, Any]] = []
    for path in sorted(CORPUS_DIR.glob("*.json")):
        for line in path.read_bytes().splitlines():
            if line.strip():
                events.append(orjson.loads(line))
    if valid_only:
        events = [event for event in events if isinstance(event.get("auditID"), str)]
    return events


def corpus_file_events(name: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (CORPUS_DIR / name).read_bytes().splitlines() if line]


def event_list(items: list[Any], api_version: str = "audit.k8s.io/v1") -> bytes:
    """An EventList body, compact with a trailing newline, as the apiserver sends it."""
    body = {"kind": "EventList", "apiVersion": api_version, "metadata": {}, "items": items}
    return orjson.dumps(body) + b"\n"
