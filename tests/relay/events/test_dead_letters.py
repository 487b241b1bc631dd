"""Dead letters (relay/events/dead_letters.py): kept bytes, or a summary that withholds them."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_common.headers import CONTENT_WITHHELD, REASON, TRUNCATED_FROM_BYTES
from relay.events.dead_letters import MAX_LISTED_ITEMS, dead_letter, event_fields
from relay.events.records import DEAD_LETTER

SECRET = b"c2VjcmV0LXBhc3N3b3Jk"
EVENT = (
    b'{"kind":"Event","level":"RequestResponse","auditID":"id-1","stage":"ResponseComplete",'
    b'"verb":"create","user":{"username":"alice","groups":["system:authenticated"],'
    b'"extra":{"username":["nope"]}},"impersonatedUser":{"username":"mallory"},'
    b'"objectRef":{"resource":"secrets","namespace":"ns","name":"db","apiVersion":"v1"},'
    b'"requestObject":{"kind":"Secret","data":{"auditID":"' + SECRET + b'","verb":"x"},'
    b'"user":{"username":"' + SECRET + b'"}},'
    b'"stageTimestamp":"2026-12-07T10:00:00.000000Z"}'
)
FIELDS = {
    "auditID": "id-1",
    "verb": "create",
    "user": {"username": "alice"},
    "objectRef": {"resource": "secrets", "namespace": "ns", "name": "db", "apiVersion": "v1"},
    "stageTimestamp": "2026-12-07T10:00:00.000000Z",
}


def withheld(raw: bytes, limit: int = 1 << 19) -> dict[str, object]:
    record = dead_letter(raw, "item is unreadable: test", "c", limit, withhold=True)
    headers = dict(record.headers)
    assert record.topic == DEAD_LETTER and record.key is None
    assert headers[CONTENT_WITHHELD] == b"true" and TRUNCATED_FROM_BYTES not in headers
    assert headers[REASON] == b"item is unreadable: test"
    assert SECRET not in record.value
    summary = orjson.loads(record.value)
    assert summary["size"] == len(raw)
    assert summary["sha256"] == hashlib.sha256(raw).hexdigest()
    assert summary["reason"] == "item is unreadable: test"
    return summary


def test_without_withholding_the_bytes_are_kept_and_cut_to_the_limit() -> None:
    record = dead_letter(EVENT, "why", "c", 100)
    assert record.value == EVENT[:100]
    assert dict(record.headers)[TRUNCATED_FROM_BYTES] == str(len(EVENT)).encode()
    assert CONTENT_WITHHELD not in dict(record.headers)


def test_a_withheld_event_keeps_its_own_fields_and_none_of_what_it_carries() -> None:
    summary = withheld(EVENT)
    assert {key: summary[key] for key in FIELDS} == FIELDS
    assert "items" not in summary


@pytest.mark.parametrize(
    "mangle",
    [
        lambda event: event.replace(b'"ns"', b'"n\xe9\xff\xfes"'),  # not UTF-8
        lambda event: event.replace(b'"requestObject":', b'"requestObject":' + b"[" * 10_000),
        lambda event: event.replace(b'"requestObject":{', b'"requestObject":' + b'{"a":' * 10_000),
        lambda event: event[: event.index(b"stageTimestamp") - 2],  # torn
        lambda event: event.replace(b'"db"', b'"d\\u00e9\\ud800\\"b"'),  # escapes, lone surrogate
    ],
    ids=["not-utf8", "deep-arrays", "deep-objects", "torn", "escapes"],
)
def test_the_scan_reads_what_no_parser_does(mangle: object) -> None:
    assert callable(mangle)
    raw = mangle(EVENT)
    summary = withheld(raw)
    assert summary["auditID"] == "id-1" and summary["verb"] == "create"
    assert summary["user"] == {"username": "alice"}


def test_escapes_and_bytes_that_are_not_utf8_are_read_as_text() -> None:
    top, _ = event_fields(b'{"auditID":"a\\u00e9\\ud800\\"b","verb":"g\xff\xfe"}')
    assert top == {"auditID": 'a\u00e9\ufffd"b', "verb": "g\ufffd\ufffd"}


def test_a_string_that_never_ends_stops_the_scan() -> None:
    # Past the unterminated string every quote is the opposite of what it seems.
    raw = b'{"auditID":"id","requestObject":{"data":"x, "verb":"' + SECRET + b'"}'
    top, _ = event_fields(raw)
    assert top == {"auditID": "id"}


def test_an_event_list_lists_its_items_fields_within_the_limit() -> None:
    items = [EVENT.replace(b"id-1", b"id-%d" % n) for n in range(150)]
    body = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[' + b",".join(items)
    summary = withheld(body)  # torn after the last item: no closing brackets
    assert summary["itemsFound"] == 150
    listed = summary["items"]
    assert isinstance(listed, list) and len(listed) == MAX_LISTED_ITEMS
    assert listed[7] == {**FIELDS, "auditID": "id-7"}
    assert "auditID" not in summary
    small = dead_letter(body, "r", "c", 2000, withhold=True)
    assert len(small.value) <= 2000 and 0 < len(orjson.loads(small.value)["items"]) < 10


def test_a_million_tiny_items_make_one_small_summary() -> None:
    body = b'{"kind":"EventList","items":[' + b",".join([b"{}"] * 1_000_000) + b"]}"
    summary = withheld(body)
    assert "items" not in summary and summary["size"] == len(body)


def test_fields_are_cut_to_a_bounded_length() -> None:
    summary = withheld(b'{"auditID":"' + b"a" * 100_000 + b'"}')
    assert summary["auditID"] == "a" * 256


field_names = st.sampled_from(
    ["auditID", "verb", "stageTimestamp", "user", "username", "objectRef", "name", "items", "x"]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(field_names, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    noise=st.dictionaries(field_names, json_values, max_size=4),
    path=st.lists(st.tuples(st.booleans(), field_names), max_size=12),
    as_item=st.booleans(),
    cut=st.integers(min_value=0, max_value=400),
    garble=st.booleans(),
)
def test_no_value_carried_by_an_event_reaches_its_summary(
    noise: dict[str, Any], path: list[tuple[bool, str]], as_item: bool, cut: int, garble: bool
) -> None:
    secret = "S3CRET-" + "v" * 12
    planted: Any = {name: secret for name in ("auditID", "verb", "stageTimestamp")}
    planted |= {"user": {"username": secret}, "objectRef": {"name": secret}}
    for in_list, key in path:
        planted = [planted] if in_list else {key: planted}
    event = {"auditID": "mine", **noise, "requestObject": planted}
    document: Any = {"kind": "EventList", "items": [event]} if as_item else event
    raw = orjson.dumps(document)
    if garble:
        raw = raw.replace(b"mine", b"m\xff\xfe")
    raw = raw[: len(raw) - cut] if cut < len(raw) else raw
    summary = withheld(raw)
    assert secret not in orjson.dumps(summary).decode()
