"""Properties of the body parser and the event conversion with redaction (hypothesis).

Whatever the bytes, the relay's pure path from body to records either says BadRequest or gives
one record per item, every valid event accepted, and never raises anything else.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_common.errors import BadRequest
from relay.events.build import build_batch, invalid_reason
from relay.events.records import EVENTS
from relay.events.redact import Redactor
from relay.events.split import split
from tests.relay.events.test_redact import int64s, json_values
from tests.support.events import audit_events

CORPUS = audit_events()
# As the apiserver posts them in an EventList: without kind and apiVersion, passed through unparsed.
ITEMS = [{k: v for k, v in event.items() if k not in ("kind", "apiVersion")} for event in CORPUS]
REDACTOR = Redactor(b"p" * 32)


def convert(body: bytes) -> tuple[list[Any], Any] | None:
    """The items and batch of ``body``, or None when the relay answers 400."""
    try:
        items, api_version = split(body)
    except BadRequest:
        return None
    batch = build_batch(
        items,
        api_version,
        "c",
        fits=lambda value, *_: len(value) < 1 << 20,
        dead_letter_limit=1 << 19,
        transform=REDACTOR.redact,
        may_transform=REDACTOR.may_redact,
    )
    return items, batch


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_are_a_400_or_records(body: bytes) -> None:
    result = convert(body)
    if result is not None:
        items, batch = result
        assert len(items) == batch.accepted + batch.dead_lettered
        # One record per event, and one dead letter listing the invalid items.
        assert len(batch.records) == batch.accepted + min(batch.dead_lettered, 1)


valid_events = st.sampled_from(CORPUS + ITEMS).map(copy.deepcopy)
items = st.lists(st.one_of(valid_events, json_values), max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=items, api_version=st.sampled_from(["audit.k8s.io/v1", "audit.k8s.io/v1beta1"]))
def test_every_valid_event_of_a_mixed_body_is_accepted(items: list[Any], api_version: str) -> None:
    body = orjson.dumps({"kind": "EventList", "apiVersion": api_version, "items": items})
    result = convert(body)
    assert result is not None
    _, batch = result
    valid = [item for item in items if invalid_reason(item) is None]
    assert batch.accepted == len(valid)
    assert batch.dead_lettered == len(items) - len(valid)
    published = [orjson.loads(r.value) for r in batch.records if r.topic == EVENTS]
    assert [event["auditID"] for event in published] == [event["auditID"] for event in valid]


@settings(max_examples=100, deadline=None)
@given(
    depth=st.integers(min_value=200, max_value=1100),
    opener=st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]),
    inside=st.sampled_from(["requestObject", "item"]),
)
def test_deep_nesting_is_a_400_or_records(
    depth: int, opener: tuple[bytes, bytes], inside: str
) -> None:
    nested = opener[0] * depth + b"1" + opener[1] * depth
    event = orjson.dumps(ITEMS[0])[:-1]
    if inside == "requestObject":
        body = b'{"kind":"EventList","items":[' + event + b',"requestObject":' + nested + b"}]}"
    else:
        body = b'{"kind":"EventList","items":[' + event + b"}," + nested + b"]}"
    result = convert(body)
    if result is not None:
        _, batch = result
        assert batch.accepted == 1
        json.loads(batch.records[0].value)  # valid JSON, if deeper than orjson reads


@pytest.mark.parametrize(
    "number", [b"1e400", b"-1e400", b"9" * 400, b"1" + b"0" * 5000, b"NaN", b"Infinity"]
)
def test_numbers_json_cannot_carry_are_published_or_dead_lettered_alone(number: bytes) -> None:
    event = orjson.dumps(ITEMS[0])[:-1]
    body = b'{"kind":"EventList","items":[' + event + b',"requestObject":' + number + b"}]}"
    result = convert(body)
    assert result is not None
    batch = result[1]
    not_json = number in (b"NaN", b"Infinity")
    assert (batch.accepted, batch.dead_lettered) == ((0, 1) if not_json else (1, 0))


@given(int64s)
def test_64_bit_integers_survive(value: int) -> None:
    event = {**ITEMS[0], "requestObject": {"n": value}}
    result = convert(orjson.dumps({"kind": "EventList", "items": [event]}))
    assert result is not None
    assert orjson.loads(result[1].records[0].value)["requestObject"]["n"] == value
