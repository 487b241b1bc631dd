"""Pure logic of turning posted JSON into Kafka records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from msgspec import Raw

from relay.events.build import (
    MAX_AHEAD_MS,
    build_batch,
    encode_event,
    event_headers,
    invalid_reason,
    kafka_timestamp,
    timestamp_ms,
)
from relay.events.records import DEAD_LETTER, EVENTS
from relay.events.redact import Redactor
from tests.support.events import audit_events


def test_invalid_reason_names_the_problem() -> None:
    event = audit_events()[0]
    assert invalid_reason(event) is None
    assert "object" in invalid_reason(3)
    assert "'verb'" in invalid_reason({**event, "verb": None})
    assert "'user'" in invalid_reason({**event, "user": "bob"})
    assert "stageTimestamp" in invalid_reason({**event, "stageTimestamp": "soon"})


def test_timestamp_parses_microseconds_and_naive_times_as_utc() -> None:
    assert timestamp_ms("2019-02-06T14:45:25.277756Z") == 1549464325277
    assert timestamp_ms("2019-02-06T14:45:25") == 1549464325000


def test_encoded_event_puts_kind_and_api_version_first_and_keeps_the_rest() -> None:
    event = {"level": "Metadata", "kind": "Event", "auditID": "a"}
    value = orjson.loads(encode_event(event, "audit.k8s.io/v1"))
    assert list(value) == ["kind", "apiVersion", "level", "auditID"]


def test_headers_carry_the_schema_version_and_skip_missing_fields() -> None:
    headers = dict(
        event_headers({"verb": "get", "stage": "ResponseComplete"}, "audit.k8s.io/v1", "c1")
    )
    assert headers == {
        "schema-version": b"1",
        "cluster": b"c1",
        "apiVersion": b"audit.k8s.io/v1",
        "verb": b"get",
        "stage": b"ResponseComplete",
    }


def test_batch_truncates_what_does_not_fit_and_dead_letters_invalid_items() -> None:
    events = audit_events()[:2]
    big = {**events[0], "requestObject": {"x": "y" * 5000}}
    batch = build_batch(
        [big, {"kind": 0}, events[1], [1]],
        "audit.k8s.io/v1",
        "c",
        fits=lambda value, *_: len(value) < 4000,
        dead_letter_limit=1000,
    )
    assert (batch.accepted, batch.dead_lettered, batch.truncated) == (2, 2, 1)
    # The invalid items in one dead letter, after the events.
    assert [record.topic for record in batch.records] == [EVENTS, EVENTS, DEAD_LETTER]
    listing = orjson.loads(batch.records[2].value)
    assert (listing["items"], listing["invalid"], listing["unlisted"]) == (4, 2, 0)
    assert [(e["index"], e["item"]) for e in listing["listed"]] == [(1, '{"kind":0}'), (3, "[1]")]
    assert dict(batch.records[2].headers)["reason"].startswith(b"2 of 4 items are not audit events")
    first = orjson.loads(batch.records[0].value)
    assert "requestObject" not in first and first["annotations"]["audit.k8s.io/truncated"] == "true"
    assert batch.records[0].key == events[0]["auditID"].encode()


def test_an_event_too_large_even_without_its_objects_is_dead_lettered_cut() -> None:
    events = audit_events()[:2]
    annotations = {"note": "n" * 5000}  # kept by the stripping, as the apiserver does
    big = {**events[0], "requestObject": {"x": "y" * 5000}, "annotations": annotations}

    def fits(value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> bool:
        return len(value) + len(key or b"") + sum(len(n) + len(v) for n, v in headers) < 4000

    batch = build_batch([big, events[1]], "audit.k8s.io/v1", "c", fits=fits, dead_letter_limit=1000)
    assert (batch.accepted, batch.dead_lettered, batch.truncated) == (1, 1, 0)
    [kept, dead] = batch.records
    assert (kept.topic, dead.topic) == (EVENTS, DEAD_LETTER)
    # Listed without its text, which would not fit the dead letter's limit.
    [listed] = orjson.loads(dead.value)["listed"]
    assert listed["reason"] == "too large for Kafka, even without its objects"
    assert listed["size"] > 5000 and "item" not in listed and len(dead.value) <= 1000


def test_the_headers_count_in_what_fits() -> None:
    event = {**audit_events()[0], "user": {"username": "u" * 3000}}  # a header of 3000 bytes

    def fits(value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> bool:
        return len(value) + sum(len(v) for _, v in headers) < 5000

    [record] = build_batch(
        [event], "audit.k8s.io/v1", "c", fits=fits, dead_letter_limit=100
    ).records
    assert record.topic == DEAD_LETTER  # its value alone (about 4 KB) would have fitted


def test_an_event_nested_too_deeply_outside_its_objects_is_dead_lettered() -> None:
    status: Any = "deep"
    for _ in range(1018):  # orjson reads it; neither orjson nor json can write it back
        status = {"details": status}
    deep = {**audit_events()[0], "responseStatus": status}
    batch = build_batch(
        [deep, audit_events()[1]],
        "audit.k8s.io/v1",
        "c",
        fits=lambda value, *_: True,
        dead_letter_limit=1000,
    )
    assert (batch.accepted, batch.dead_lettered) == (1, 1)
    assert [record.topic for record in batch.records] == [EVENTS, DEAD_LETTER]
    listing = orjson.loads(batch.records[1].value)
    assert listing["listed"][0]["reason"].startswith("nested too deeply")


@pytest.mark.parametrize(
    "stage_timestamp", ["9999-12-31T23:59:59Z", "1960-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00"]
)
def test_a_time_a_broker_could_refuse_leaves_the_record_unstamped(stage_timestamp: str) -> None:
    assert kafka_timestamp(stage_timestamp) is None


def test_a_time_within_the_clock_skew_allowance_stamps_the_record() -> None:
    soon = datetime.now(UTC) + timedelta(milliseconds=MAX_AHEAD_MS // 2)
    text = soon.isoformat().replace("+00:00", "Z")
    assert kafka_timestamp(text) == timestamp_ms(text)
    assert kafka_timestamp("2019-02-06T14:45:25.277756Z") == 1549464325277


def test_transform_is_applied_and_counted() -> None:
    def drop_user(event: dict) -> bool:
        return event.pop("user", None) is not None

    batch = build_batch(
        audit_events()[:3],
        "audit.k8s.io/v1",
        "c",
        fits=lambda *_: True,
        dead_letter_limit=10,
        transform=drop_user,
    )
    assert batch.transformed == 3
    assert all("user" not in orjson.loads(record.value) for record in batch.records)


@pytest.mark.parametrize("redaction", [True, False])
def test_an_item_nothing_can_read_is_withheld_while_redaction_is_on(redaction: bool) -> None:
    secret = b"c2VjcmV0LXBhc3N3b3Jk"
    unreadable = (
        b'{"auditID":"deep-1","verb":"patch","objectRef":{"resource":"secrets","name":"db"},'
        b'"requestObject":' + b'{"a":' * 5000 + b'{"data":{"password":"' + secret + b'"}}'
        + b"}" * 5000 + b"}"
    )  # fmt: skip
    good = orjson.dumps(audit_events()[0])
    redactor = Redactor(b"k" * 32)
    batch = build_batch(
        [Raw(unreadable), Raw(good)],
        "audit.k8s.io/v1",
        "c",
        fits=lambda *_: True,
        dead_letter_limit=1 << 20,
        transform=redactor.redact if redaction else None,
        may_transform=redactor.may_redact,
    )
    assert (batch.accepted, batch.dead_lettered) == (1, 1)
    if redaction:  # withheld where it stood
        dead, event = batch.records
        headers = dict(dead.headers)
        assert headers["reason"] == b"missing or non-string field 'stage'"
        assert headers["content-withheld"] == b"true" and secret not in dead.value
        summary = orjson.loads(dead.value)
        assert summary["auditID"] == "deep-1" and summary["objectRef"]["name"] == "db"
    else:  # listed with its text in the request's one dead letter of invalid items
        event, dead = batch.records
        assert "content-withheld" not in dict(dead.headers)
        [listed] = orjson.loads(dead.value)["listed"]
        assert listed["item"].encode() == unreadable
    assert (dead.topic, event.topic) == (DEAD_LETTER, EVENTS)


def test_the_listing_of_invalid_items_stays_within_the_dead_letter_limit() -> None:
    items: list[Any] = [{"n": "x" * 300}] * 100 + [[i] for i in range(5000)]
    batch = build_batch(
        items, "audit.k8s.io/v1", "c", fits=lambda value, *_: True, dead_letter_limit=20_000
    )
    [record] = batch.records
    assert batch.dead_lettered == len(items)
    assert len(record.value) <= 20_000
    listing = orjson.loads(record.value)
    listed = listing["listed"]
    assert listing["invalid"] == len(items) == len(listed) + listing["unlisted"]
    assert [entry["index"] for entry in listed] == list(range(len(listed)))
    assert all("reason" in entry and "size" in entry for entry in listed)
    assert "item" in listed[0] and any("item" not in entry for entry in listed)
