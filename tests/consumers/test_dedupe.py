from __future__ import annotations

import orjson

from consumers.dedupe import Deduplicator
from consumers.events import ConsumedEvent, decode


def event(
    audit_id: str, stage: str = "ResponseComplete", cluster: str = "c", verb: str = "get"
) -> ConsumedEvent:
    data = {
        "auditID": audit_id,
        "stage": stage,
        "stageTimestamp": "2024-01-01T00:00:00.1Z",
        "verb": verb,
    }
    return decode(
        orjson.dumps(data), [("cluster", cluster.encode())], topic="t", partition=0, offset=0
    )


def test_a_resent_batch_is_dropped_within_the_window() -> None:
    dedupe = Deduplicator(10)
    batch = [event(str(i)) for i in range(5)]
    assert [dedupe.is_repeat(e) for e in batch] == [False] * 5
    assert [dedupe.is_repeat(e) for e in batch] == [True] * 5


def test_stage_and_cluster_are_part_of_the_key() -> None:
    dedupe = Deduplicator(10)
    assert not dedupe.is_repeat(event("a", stage="RequestReceived"))
    assert not dedupe.is_repeat(event("a", stage="ResponseComplete"))
    assert not dedupe.is_repeat(event("a", cluster="other"))
    assert dedupe.is_repeat(event("a", stage="ResponseComplete"))


def test_distinct_events_sharing_audit_id_stage_and_time_are_both_kept() -> None:
    # Clients set Audit-ID themselves: two requests may share it, stage and stageTimestamp.
    dedupe = Deduplicator(10)
    assert not dedupe.is_repeat(event("a", verb="get"))
    assert not dedupe.is_repeat(event("a", verb="delete"))
    assert dedupe.is_repeat(event("a", verb="delete"))


def test_only_the_last_n_keys_are_remembered() -> None:
    dedupe = Deduplicator(3)
    for name in "abcd":
        assert not dedupe.is_repeat(event(name))
    assert not dedupe.is_repeat(event("a"))  # pushed out by d
    assert dedupe.is_repeat(event("d"))


def test_window_zero_keeps_everything() -> None:
    dedupe = Deduplicator(0)
    assert not dedupe.is_repeat(event("a"))
    assert not dedupe.is_repeat(event("a"))
