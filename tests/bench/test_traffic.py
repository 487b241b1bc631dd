"""The benchmark's traffic: realistic sizes, valid EventLists, an auditID never repeated."""

from __future__ import annotations

import orjson

from bench.traffic import SIZES, Traffic, published_values
from relay.events.build import invalid_reason
from relay.events.split import split


def test_each_level_has_its_size_and_the_mix_is_mostly_metadata() -> None:
    traffic = Traffic.build(400, templates=2)
    values = published_values(traffic.templates)
    by_level: dict[str, list[int]] = {}
    for value in values:
        by_level.setdefault(orjson.loads(value)["level"], []).append(len(value))
    for level, sizes in by_level.items():
        low, high = SIZES[level]
        # The published value adds kind and apiVersion to the item as posted.
        assert low <= min(sizes) and max(sizes) <= high + 64, level
    assert len(by_level["Metadata"]) > len(by_level["Request"]) > len(by_level["RequestResponse"])


def test_stamped_bodies_are_valid_event_lists_with_unique_audit_ids() -> None:
    traffic = Traffic.build(100, templates=3)
    seen: set[str] = set()
    for _ in range(7):
        body, count = traffic.next()
        assert body.endswith(b"\n")
        raw_items, api_version = split(bytes(body))
        items = [orjson.loads(bytes(item)) for item in raw_items]
        assert api_version == "audit.k8s.io/v1"
        assert len(items) == count == 100
        assert all(invalid_reason(item) is None for item in items)
        assert all("kind" not in item for item in items)
        seen.update(item["auditID"] for item in items)
    assert len(seen) == 700
