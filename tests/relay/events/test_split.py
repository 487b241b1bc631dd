"""Items passed through as their own bytes: the same records, and the same answers, as parsing.

Each test builds the records of one body twice, by ``relay.events.split.split`` (msgspec, raw
items) and by the full parse (orjson) that the relay used before, and compares them; and an item
nothing parses whole is read, or dead-lettered, alone (issue 22).
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
from audit_common.escaped_bytes import unescape
from audit_common.headers import ESCAPED_BYTES
from relay.events.build import Batch, build_batch
from relay.events.clearance import parse_item
from relay.events.records import DEAD_LETTER, EVENTS
from relay.events.redact import MARKER_PREFIX, Redactor
from relay.events.split import DEFAULT_API_VERSION, split
from tests.support import apiserver_json, json_grammar
from tests.support.events import audit_events, event_list

REDACTOR = Redactor(b"f" * 32)
# As the apiserver posts them in an EventList: no kind or apiVersion of their own.
ITEMS = [
    {k: v for k, v in event.items() if k not in ("kind", "apiVersion")} for event in audit_events()
]


def full_parse(body: bytes) -> tuple[list[Any], str]:
    """The items as the relay read them before passing them through: each parsed."""
    document = parse_item(body)
    items = document["items"] if document.get("kind") == "EventList" else [document]
    return items or [], document.get("apiVersion") or DEFAULT_API_VERSION


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
    full = batch_of(*full_parse(body), **options)
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
    # The three invalid items, and the second when it is one, in one dead letter after the events.
    assert [record.topic for record in fast.records][-1:] == [DEAD_LETTER]
    assert fast.dead_lettered in (3, 4)
    assert orjson.loads(fast.records[-1].value)["invalid"] == fast.dead_lettered


def test_an_item_written_over_several_lines_is_published_on_one() -> None:
    pretty = orjson.dumps(ITEMS[0], option=orjson.OPT_INDENT_2)
    body = b'{"kind":"EventList","items":[' + pretty + b"]}"
    fast, _ = both_ways(body)
    assert b"\n" not in fast.records[0].value


@pytest.mark.parametrize("inside", [b"NaN", b"01", b'"\\x"', b"[1 2]", b'"a\tb"', b"{1}", b"[}"])
def test_an_item_that_is_not_json_is_dead_lettered_alone(inside: bytes) -> None:
    body = event_list([ITEMS[0], {**ITEMS[1], "requestObject": "@"}, ITEMS[2]])
    body = body.replace(b'"@"', inside)
    batch = batch_of(*split(body))
    assert (batch.accepted, batch.dead_lettered) == (2, 1)
    assert [r.key for r in batch.records[:2]] == [
        ITEMS[0]["auditID"].encode(),
        ITEMS[2]["auditID"].encode(),
    ]
    listing = orjson.loads(batch.records[2].value)
    assert [entry["index"] for entry in listing["listed"]] == [1]
    assert listing["listed"][0]["item"].encode() == orjson.dumps(
        {**ITEMS[1], "requestObject": "@"}
    ).replace(b'"@"', inside)


@pytest.mark.parametrize(
    ("inside", "escaped"),
    [
        (b'"\xff\xfe"', 2),
        (b'"\xed\xa0\x80"', 3),  # an encoded surrogate is no UTF-8
        (b'"\xe9\xff\xfe \xee\xbe\x80"', 6),  # U+EF80 as sent is escaped too: reversible
    ],
)
def test_an_item_with_bytes_that_are_not_utf8_is_published_escaped(
    inside: bytes, escaped: int
) -> None:
    body = event_list([ITEMS[0], {**ITEMS[1], "requestObject": "@"}, ITEMS[2]])
    body = body.replace(b'"@"', inside)
    batch = batch_of(*split(body))
    assert (batch.accepted, batch.dead_lettered) == (3, 0)
    record = batch.records[1]
    sent = orjson.dumps({**ITEMS[1], "requestObject": "@"}).replace(b'"@"', inside)
    assert unescape(record.value) == b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",' + sent[1:]
    record.value.decode()  # UTF-8 now
    assert dict(record.headers)[ESCAPED_BYTES] == str(escaped).encode()
    # Each byte escaped is a character of three bytes.
    assert len(record.value) - len(unescape(record.value)) == 2 * escaped
    assert all(ESCAPED_BYTES not in dict(r.headers) for r in (batch.records[0], batch.records[2]))


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
    ("body", "answer"),
    [
        (orjson.dumps(ITEMS[0]), 1),
        (orjson.dumps({**ITEMS[0], "kind": "Event"}), 1),
        (
            orjson.dumps({**ITEMS[0], "kind": "Event", "x": "@"}).replace(b"@", b"\xff"),
            1,
        ),
        (b'{"kind":"EventList","items":[]}', 0),
        (b'{"kind":"EventList","items":null}', 0),
        (b'{"kind":"EventList"}', 0),
        (b'{"kind":"EventList","apiVersion":"v1","items":[]}', "unsupported apiVersion 'v1'"),
        (b'{"kind":"EventList","items":{}}', "EventList.items is not a list"),
        (b'{"kind":"EventList","items":3}', "EventList.items is not a list"),
        (b'{"kind":"Pod"}', "kind 'Pod' is neither EventList nor Event"),
        (b'{"a":"\xff"}', "kind None is neither EventList nor Event"),
        (b"[]", "body is not valid JSON: expected an object"),
        (b'"x"', "body is not valid JSON: expected an object"),
        (b"  ", "empty body"),
        (b"", "empty body"),
    ],
)
def test_other_bodies(body: bytes, answer: int | str) -> None:
    if isinstance(answer, int):
        items, version = split(body)
        assert (len(items), version) == (answer, DEFAULT_API_VERSION)
    else:
        with pytest.raises(BadRequest) as refused:
            split(body)
        assert str(refused.value).startswith(answer)


@pytest.mark.parametrize(
    "cut",
    [
        lambda body: body[: len(body) // 2],  # truncated inside an item
        lambda body: body.rstrip()[:-1],  # without the last brace
        lambda body: body.replace(b'"verb":"', b'"verb":', 1),  # a string that never ends
        lambda body: body + b"{}",
        lambda body: body.rstrip()[:-2] + b"}}",  # the array closed by a brace
    ],
)
def test_a_torn_body_is_refused_whole(cut: Any) -> None:
    body = cut(event_list(ITEMS[:3]))
    with pytest.raises(BadRequest) as refused:
        split(body)
    assert str(refused.value).startswith("body is not valid JSON: ")


def test_a_single_event_body_is_read_as_an_eventlist_item_is() -> None:
    body = orjson.dumps({**ITEMS[0], "apiVersion": "audit.k8s.io/v1beta1"})
    items, version = split(body)
    batch = batch_of(items, version)
    assert (batch.accepted, version) == (1, "audit.k8s.io/v1beta1")


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


@pytest.mark.parametrize("depth", [300, 990, 1000, 1030, 1102, 4002, 10_000])
@pytest.mark.parametrize("redact", [False, True], ids=["plain", "redactor"])
def test_deeply_nested_items_are_published_as_their_own_bytes(depth: int, redact: bool) -> None:
    # A merge patch as kube-apiserver logs it: Go's decoder accepts 10,000 levels.
    deep = orjson.dumps({**ITEMS[1], "requestObject": "@"})
    deep = deep.replace(b'"@"', b'{"a":' * depth + b"1" + b"}" * depth)
    body = event_list([ITEMS[0], "@item", ITEMS[2]]).replace(b'"@item"', deep)
    options = {"transform": REDACTOR.redact, "may_transform": REDACTOR.may_redact} if redact else {}
    batch = batch_of(*split(body), **options)
    assert (batch.accepted, batch.dead_lettered) == (3, 0)
    assert batch.records[1].value == b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",' + deep[1:]
    assert batch.records[1].key == ITEMS[1]["auditID"].encode()


def test_a_deep_item_that_does_not_fit_loses_its_objects() -> None:
    deep = orjson.dumps({**ITEMS[1], "requestObject": "@"})
    deep = deep.replace(b'"@"', b"[" * 5000 + b"]" * 5000)
    body = event_list(["@item"]).replace(b'"@item"', deep)
    batch = batch_of(*split(body), fits=lambda v, *_: len(v) < 5000)
    assert (batch.accepted, batch.truncated) == (1, 1)
    assert b"requestObject" not in batch.records[0].value
    assert b'"audit.k8s.io/truncated":"true"' in batch.records[0].value


def test_a_deep_item_that_may_hold_a_secret_is_withheld() -> None:
    deep = orjson.dumps(secret_item("secrets")).replace(
        b'"aHVudGVyMg=="', b"[" * 2000 + b'"aHVudGVyMg=="' + b"]" * 2000
    )
    body = event_list([ITEMS[0], "@item"]).replace(b'"@item"', deep)
    batch = batch_of(*split(body), transform=REDACTOR.redact, may_transform=REDACTOR.may_redact)
    assert (batch.accepted, batch.dead_lettered) == (1, 1)
    [withheld] = [r for r in batch.records if r.topic == DEAD_LETTER]
    assert dict(withheld.headers)["content-withheld"] == b"true"
    summary = orjson.loads(withheld.value)
    assert summary["auditID"] == secret_item("secrets")["auditID"] and summary["size"] == len(deep)
    assert all(b"aHVudGVyMg" not in r.value for r in batch.records)


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


def published_as_sent(batch: Batch, items: list[bytes]) -> None:
    """Each item a record whose value, the escape undone, is the item as sent."""
    assert (batch.accepted, batch.dead_lettered) == (len(items), 0)
    envelope = b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",'
    for record, item in zip(batch.records, items, strict=True):
        escaped = ESCAPED_BYTES in dict(record.headers)
        record.value.decode()  # UTF-8, escaped or not
        assert (unescape(record.value) if escaped else record.value) == envelope + item[1:]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    objects=st.lists(
        st.one_of(apiserver_json.VALUES, apiserver_json.DEEP_VALUES), min_size=1, max_size=3
    ),
    notes=st.lists(apiserver_json.STRINGS, min_size=3, max_size=3),
)
def test_whatever_the_apiserver_writes_is_published_as_sent(
    objects: list[bytes], notes: list[bytes]
) -> None:
    items = [
        apiserver_json.item(ITEMS[index], value, note)
        for index, (value, note) in enumerate(zip(objects, notes, strict=False))
    ]
    published_as_sent(batch_of(*split(apiserver_json.event_list(items))), items)


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(huge=apiserver_json.HUGE_VALUES)
def test_an_item_of_several_megabytes_is_truncated_alone(huge: bytes) -> None:
    items = [orjson.dumps(ITEMS[0]), apiserver_json.item(ITEMS[1], huge), orjson.dumps(ITEMS[2])]
    body = apiserver_json.event_list(items)
    batch = batch_of(*split(body), fits=lambda value, *_: len(value) < 1 << 20)
    assert (batch.accepted, batch.truncated) == (3, 1)
    published_as_sent(Batch(batch.records[::2], accepted=2), items[::2])
    truncated = orjson.loads(batch.records[1].value)
    assert "requestObject" not in truncated
    assert truncated["annotations"]["audit.k8s.io/truncated"] == "true"
