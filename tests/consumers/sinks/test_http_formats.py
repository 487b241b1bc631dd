"""Elasticsearch document ids: the event's digest, as the message contract says a repeat is
recognised (a pure function of the consumed bytes and the cluster header)."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import orjson

from audit_common.samples import sample_events
from consumers.events import ConsumedEvent, decode
from consumers.sinks.http_formats import BodyOptions, document_id, encode
from relay.events.build import encode_event


def consumed(
    event: dict[str, Any], cluster: str | None = "prod-eu", offset: int = 0
) -> ConsumedEvent:
    headers = [("cluster", cluster.encode())] if cluster else []
    value = encode_event(event, "audit.k8s.io/v1")
    return decode(value, headers, topic="t", partition=0, offset=offset)


def test_distinct_events_sharing_audit_id_stage_and_time_get_distinct_ids() -> None:
    first = sample_events(1, cluster="prod-eu", seed=5)[0]
    second = copy.deepcopy(first)
    second["user"] = {"username": "mallory"}  # same auditID, stage, stageTimestamp
    events = [consumed(first), consumed(second, offset=1), consumed(first, offset=2)]
    ids = [document_id(event) for event in events]
    assert ids[0] != ids[1], "a distinct event would be dropped as a 409"
    assert ids[0] == ids[2], "a repeat must be the same document"
    assert ids[0] == "prod-eu:" + hashlib.sha256(events[0].raw).hexdigest()
    assert ids[0] != document_id(consumed(first, cluster="staging"))  # (cluster, digest)
    assert document_id(consumed(first, cluster=None)) == ":" + events[0].digest.hex()

    lines = encode("elasticsearch", events, BodyOptions("audit")).splitlines()
    actions = [orjson.loads(line)["create"] for line in lines[::2]]
    assert [action["_id"] for action in actions] == ids
