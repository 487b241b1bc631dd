"""Items passed through as their own bytes: the same records, and the same answers, as parsing.

Each test builds the records of one body twice, by ``relay.events.split.split`` (msgspec, raw
items) and by the full parse (orjson) that the relay used before, and compares them.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import Raw

from audit_common import json_text
from audit_common.errors import BadRequest
from relay.events.build import Batch, build_batch
from relay.events.records import DEAD_LETTER, EVENTS
from relay.events.redact import MARKER_PREFIX, Redactor
from relay.events.split import items_of, parse_json, split
from tests.support import json_grammar
from tests.support.corpus import corpus_events, event_list

REDACTOR = Redactor(b"f" * 32)
# As the apiserver posts them in an EventList: no kind or apiVersion of their own.
ITEMS = [
    {k: v for k, v in event.items() if k not in ("kind", "apiVersion")} for event in corpus_events()
]


def batch_of(items: list[Any], api_version: str, **options: Any) -> Batch:
    options = {"fits": lambda *_: True, "dead_letter_limit": 1 << 20, **options}
    return build_batch(items, api_version, "c", **options)


def records(batch: Batch) -> list[tuple[Any, ...]]:
    """The records with each value parsed: what consumers see."""
    return [
        (
            r.topic,
            value(r.value) if r.topic == EVENTS else r.value,
            r.key,
            r.headers,
            r.timestamp_ms,
        )
        for r in batch.records
    ]


def value(raw: bytes) -> Any:
    assert raw.count(b'"kind":') >= 1 and b"\n" not in raw
    return orjson.loads(raw)


def both_ways(body: bytes, **options: Any) -> tuple[Batch, Batch]:
    """The batch of ``body`` through the pass-through, and through the full parse."""
    fast = batch_of(*split(body), **options)
    full = batch_of(*items_of(parse_json(body)), **options)
    assert records(fast) == records(full)
    assert (fast.accepted, fast.dead_lettered, fast.truncated, fast.transformed) == (
        full.accepted,
        full.dead_lettered,
        full.truncated,
        full.transformed,
    )
    return fast, full


@pytest.mark.parametrize("api_version", ["audit.k8s.io/v1", "audit.k8s.io/v1beta1"])
def test_apiserver_items_are_published_as_their_own_bytes(api_version: str) -> None:
    body = event_list(ITEMS, api_version)
    items, _ = split(body)
    assert all(isinstance(item, Raw) for item in items)
    fast, _ = both_ways(body)
    assert fast.accepted == len(ITEMS)
    for record, item in zip(fast.records, ITEMS, strict=True):
        prefix = b'{"kind":"Event","apiVersion":"%s",' % api_version.encode()
        assert record.value == prefix + orjson.dumps(item)[1:]


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "Event"},
        {"apiVersion": "audit.k8s.io/v1beta1"},
        {"verb": None},
        {"user": None},
        {"objectRef": "pods"},
        {"stageTimestamp": "soon"},
        {"auditID": 7},
        {"user": {"username": 3}},
    ],
)
def test_items_that_cannot_pass_through_give_the_records_of_the_full_parse(
    change: dict[str, Any],
) -> None:
    items: list[Any] = [ITEMS[0], {**ITEMS[1], **change}, ITEMS[2], [1], "x", None]
    fast, _ = both_ways(event_list(items))
    assert [record.topic for record in fast.records][3:] == [DEAD_LETTER] * 3


def test_an_item_written_over_several_lines_is_published_on_one() -> None:
    pretty = orjson.dumps(ITEMS[0], option=orjson.OPT_INDENT_2)
    body = b'{"kind":"EventList","items":[' + pretty + b"]}"
    fast, _ = both_ways(body)
    assert b"\n" not in fast.records[0].value


@pytest.mark.parametrize("inside", [b'"\xff\xfe"', b'"\xed\xa0\x80"', b"NaN", b"01", b'"\\x"'])
def test_bodies_that_are_not_json_are_refused_for_the_reason_orjson_gives(inside: bytes) -> None:
    body = event_list([ITEMS[0], {**ITEMS[1], "requestObject": "@"}])
    body = body.replace(b'"@"', inside)
    with pytest.raises(BadRequest) as full:
        parse_json(body)
    with pytest.raises(BadRequest) as fast:
        split(body)
    assert str(fast.value) == str(full.value)
    assert str(fast.value).startswith("body is not valid JSON: ")


@pytest.mark.parametrize(
    "inside",
    [
        b'"\\ud800"',  # an escape that is no Unicode character: orjson refuses it
        b'["\\udc00\\ud800", {"\\ud83d": 1}]',
        b"1e400",  # beyond a double: orjson refuses it
        b"-9" + b"9" * 400,
        b"123456789012345678901234567890",  # beyond 64 bits: orjson reads a float
        b"[1E+2, 0.10000000000000000001, -0.0, 1e-400]",
        b'"\\u00e9\\/\\t\\"\\\\ \\ud83d\\ude00"',  # escapes orjson would write otherwise
    ],
)
@pytest.mark.parametrize("redact", [False, True], ids=["plain", "redactor"])
def test_valid_json_reaches_kafka_byte_for_byte(inside: bytes, redact: bool) -> None:
    # The apiserver logs a PATCH body verbatim: whoever may patch chooses these bytes.
    body = event_list([ITEMS[0], {**ITEMS[1], "requestObject": "@"}, ITEMS[2]])
    body = body.replace(b'"@"', inside)
    items, version = split(body)
    options = {"transform": REDACTOR.redact, "may_transform": REDACTOR.may_redact} if redact else {}
    batch = batch_of(items, version, **options)
    assert (batch.accepted, batch.dead_lettered) == (3, 0)
    sent = [
        orjson.dumps(ITEMS[0]),
        orjson.dumps({**ITEMS[1], "requestObject": "@"}),
        orjson.dumps(ITEMS[2]),
    ]
    sent[1] = sent[1].replace(b'"@"', inside)
    assert [r.value for r in batch.records] == [
        b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",' + item[1:] for item in sent
    ]


@pytest.mark.parametrize(
    "body",
    [
        orjson.dumps(ITEMS[0]),
        orjson.dumps({**ITEMS[0], "kind": "Event"}),
        b'{"kind":"EventList","apiVersion":"v1","items":[]}',
        b'{"kind":"EventList","items":null}',
        b'{"kind":"EventList","items":{}}',
        b'{"kind":"Pod"}',
        b"[]",
        b"  ",
    ],
)
def test_other_bodies_get_the_answers_of_the_full_parse(body: bytes) -> None:
    try:
        expected: Any = items_of(parse_json(body))
    except BadRequest as exc:
        expected = str(exc)
    try:
        got: Any = split(body)
    except BadRequest as exc:
        got = str(exc)
    assert got == expected


def secret_item(resource: str, kind: str = "Secret") -> dict[str, Any]:
    secret = {"kind": kind, "apiVersion": "v1", "data": {"password": "aHVudGVyMg=="}}
    return {
        **ITEMS[0],
        "level": "Request",
        "objectRef": {"resource": resource, "namespace": "ns", "name": "s"},
        "requestObject": secret,
    }


@pytest.mark.parametrize(
    "item",
    [secret_item("secrets"), secret_item("configmaps"), secret_item("things")],
)
def test_events_that_may_carry_secrets_are_redacted(item: dict[str, Any]) -> None:
    body = event_list([item]).replace(b'"Secret"', b'"\\u0053ecret"')
    fast, _ = both_ways(body, transform=REDACTOR.redact, may_transform=REDACTOR.may_redact)
    assert fast.transformed == 1
    assert b"aHVudGVyMg" not in fast.records[0].value
    assert MARKER_PREFIX.encode() in fast.records[0].value


def test_with_a_transform_but_no_predicate_every_event_is_transformed() -> None:
    def drop_user(event: dict[str, Any]) -> bool:
        return event.pop("user", None) is not None

    fast, _ = both_ways(event_list(ITEMS[:5]), transform=drop_user)
    assert fast.transformed == 5


def test_events_that_do_not_fit_are_truncated() -> None:
    big = {**ITEMS[0], "requestObject": {"x": "y" * 5000}}
    fast, _ = both_ways(event_list([big, ITEMS[1]]), fits=lambda value, *_: len(value) < 4000)
    assert fast.truncated == 1
    assert b"yyyy" not in fast.records[0].value


@pytest.mark.parametrize("depth", [300, 990, 1000, 1030])
def test_deeply_nested_items_get_the_answer_of_the_full_parse(depth: int) -> None:
    body = event_list([{**ITEMS[0], "requestObject": "@"}])
    body = body.replace(b'"@"', b"[" * depth + b"1" + b"]" * depth)
    try:
        parse_json(body)
    except BadRequest as full:
        with pytest.raises(BadRequest) as fast:
            split(body)
        assert str(fast.value) == str(full)
    else:
        both_ways(body)


def test_items_of_event_list_single_event_and_legacy_version() -> None:
    event = corpus_events()[0]
    assert items_of(
        {"kind": "EventList", "apiVersion": "audit.k8s.io/v1beta1", "items": [event]}
    ) == (
        [event],
        "audit.k8s.io/v1beta1",
    )
    assert items_of({"kind": "EventList", "items": None}) == ([], "audit.k8s.io/v1")
    assert items_of(event)[0] == [event]


@pytest.mark.parametrize(
    "document",
    [
        [],
        "x",
        {"kind": "Pod"},
        {"kind": "EventList", "apiVersion": "v1", "items": []},
        {"kind": "EventList", "items": 3},
    ],
)
def test_items_of_refuses_what_is_not_an_audit_document(document: object) -> None:
    with pytest.raises(BadRequest):
        items_of(document)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=json_grammar.VALUES, response=json_grammar.VALUES, redact=st.booleans())
def test_any_json_the_grammar_allows_reaches_kafka_byte_for_byte(
    request: bytes, response: bytes, redact: bool
) -> None:
    item = orjson.dumps({**ITEMS[1], "requestObject": "@1", "responseObject": "@2"})
    item = item.replace(b'"@1"', request).replace(b'"@2"', response)
    body = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[' + item + b"]}"
    options = {"transform": REDACTOR.redact, "may_transform": REDACTOR.may_redact} if redact else {}
    batch = batch_of(*split(body), **options)
    [record] = batch.records
    assert (record.topic, batch.accepted) == (EVENTS, 1)
    expected = json_text.one_line(item)
    assert record.value == b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",' + expected[1:]
