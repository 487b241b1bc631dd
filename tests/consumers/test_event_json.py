"""Narrow decoding agrees with decoding whole events by orjson, which it replaces for speed, and
reads the valid JSON that orjson refuses."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_common.errors import InvalidEvent
from consumers.event_json import TOP_NAMES, project, top_fields, whole
from consumers.events import ConsumedEvent, decode
from tests.support.events import audit_events


def loads(value: bytes) -> Any:
    """The whole value as consumers read it: as orjson does, and valid JSON (RFC 8259) that
    orjson refuses as the standard library does, with what orjson cannot hold as it would give
    it (a number beyond a double as null, an integer beyond 64 bits as a float). Raises
    orjson's error for what is not JSON."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        refused = exc
    try:
        data = json.loads(
            value.decode("utf-8"),
            parse_constant=lambda name: {}[name],
            parse_float=lambda text: float(text) if math.isfinite(float(text)) else None,
        )
    except (ValueError, KeyError, RecursionError):
        raise refused from None
    return orjson_numbers(data)


def orjson_numbers(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: orjson_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [orjson_numbers(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return float(value) if abs(value) < 2**1024 else None
    return value


def reference(value: bytes) -> str | dict[str, Any]:
    """What decoding must give: the dead-letter reason, or the top-level fields."""
    try:
        data = loads(value)
    except orjson.JSONDecodeError as exc:
        return f"value is not JSON: {exc}"
    if not isinstance(data, dict):
        return f"value is a JSON {type(data).__name__}, not an object"
    if not isinstance(data.get("auditID"), str):
        return "missing or non-string field 'auditID'"
    return project(data)


def narrow(value: bytes) -> str | dict[str, Any]:
    try:
        event = decode(value, [], topic="t", partition=0, offset=0)
    except InvalidEvent as exc:
        return str(exc)
    assert event.data == loads(value)
    return dict(event.top)


def test_every_event_gives_the_same_fields() -> None:
    for event in audit_events(valid_only=False):
        value = orjson.dumps(event)
        assert narrow(value) == reference(value)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from([*TOP_NAMES, "username", "code", "x"]), children)
    ),
    max_leaves=20,
)
events = st.dictionaries(st.sampled_from([*TOP_NAMES, "requestObject", "kind"]), json_values)


@settings(max_examples=300, deadline=None)
@given(events)
def test_any_object_gives_the_fields_orjson_gives(event: dict[str, Any]) -> None:
    value = msgspec.json.encode(event)  # orjson cannot write integers beyond 64 bits
    assert narrow(value) == reference(value)


@settings(max_examples=500, deadline=None)
@given(events, st.data())
def test_a_damaged_value_is_refused_for_the_reason_orjson_gives_unless_still_json(
    event: dict[str, Any], data: st.DataObject
) -> None:
    value = bytearray(msgspec.json.encode({"auditID": "a", **event}))
    position = data.draw(st.integers(min_value=0, max_value=len(value) - 1))
    value[position] = data.draw(st.sampled_from(b'{}[]",:\\0e9-.\xff\xc3 '))
    assert narrow(bytes(value)) == reference(bytes(value))


@pytest.mark.parametrize(
    "value",
    [
        b'{"auditID": "a", "requestObject": {"name": "\xff"}}',  # invalid UTF-8 where skipped
        b'{"auditID": "a", "requestObject": "\\ud800"}',
        b'{"auditID": "a", "user": {"username": 1e999}}',  # out of range where read
        b'{"auditID": "a"} trailing',
        b"[1]",
        b'{"auditID": 5}',
    ],
)
def test_edge_cases_decode_as_whole_decoding_does(value: bytes) -> None:
    assert narrow(value) == reference(value)


def test_an_event_deeper_than_msgspec_goes_is_decoded_by_orjson() -> None:
    value = b'{"auditID": "a", "x": ' + b"[" * 1020 + b"]" * 1020 + b"}"
    event = decode(value, [], topic="t", partition=0, offset=0)
    assert event.audit_id == "a" and list(event.data) == ["auditID", "x"]
    # (compared by hand: Python's == recurses too deep for this value)
    nested = event.data["x"]
    for _ in range(1019):
        [nested] = nested
    assert nested == []


@pytest.mark.parametrize("depth", [1102, 4002, 10_000])
def test_an_event_deeper_than_any_parser_goes_is_read_member_by_member(depth: int) -> None:
    # A merge patch kube-apiserver logged as sent, published by the relay as its own bytes.
    deep = b'{"a":' * depth + b"1" + b"}" * depth
    value = orjson.dumps(
        {"kind": "Event", "auditID": "a", "verb": "patch", "user": {"username": "u"}, "r": "@"}
    ).replace(b'"@"', deep)
    event = decode(value, [], topic="t", partition=0, offset=0)
    assert (event.audit_id, event.verb, event.username) == ("a", "patch", "u")
    assert event.data["r"] == deep.decode()  # a member too deep to parse: its JSON text
    assert event.data["user"] == {"username": "u"}
    assert orjson.loads(event.with_data(event.data).raw)["auditID"] == "a"


def test_an_event_with_escaped_bytes_decodes_as_any_other() -> None:
    # What the relay makes of bytes that are not UTF-8: characters U+EF80..U+EFFF.
    value = orjson.dumps({"auditID": "a", "annotations": {"x": "\uefe9\uefff\ueffe"}})
    event = decode(value, [], topic="t", partition=0, offset=0)
    assert event.data == orjson.loads(value)
    assert event.top["annotations"] == {"x": "\uefe9\uefff\ueffe"}


def test_a_number_out_of_range_where_skipped_reads_as_null_in_the_whole_event() -> None:
    value = (
        b'{"auditID": "a", "requestObject": [1e999, 1' + b"0" * 400 + b", 18446744073709551616]}"
    )
    event = decode(value, [], topic="t", partition=0, offset=0)
    assert event.audit_id == "a"
    assert whole(value) == event.data == {"auditID": "a", "requestObject": [None, None, 2.0**64]}
    assert orjson.loads(orjson.dumps(event.data)) == event.data


def test_with_data_replaces_the_event_and_its_fields() -> None:
    event = decode(
        b'{"auditID": "a", "verb": "get\\u0000"}',
        [("cluster", b"c")],
        topic="t",
        partition=1,
        offset=2,
    )
    cleaned = event.with_data({"auditID": "a", "verb": "get"})
    assert cleaned.verb == "get" and cleaned.raw == b'{"auditID":"a","verb":"get"}'
    assert (cleaned.cluster, cleaned.topic, cleaned.partition, cleaned.offset) == ("c", "t", 1, 2)
    assert isinstance(cleaned, ConsumedEvent) and top_fields(cleaned.raw) == dict(cleaned.top)
