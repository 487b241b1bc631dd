"""The byte-level scanner of JSON's grammar: the same boundaries and members as a parser where
one reads the text, and the same at any depth and with any bytes in strings where none does."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_common import json_scan, json_text
from audit_common.json_scan import TooManyItems
from tests.support import apiserver_json, json_grammar

_WS = st.sampled_from([b"", b" ", b"\n", b"\r\n\t "])


def body_of(items: list[bytes], spaces: list[bytes]) -> bytes:
    spaced = [space + item + space for item, space in zip(items, spaces, strict=False)]
    return b'{"kind":"EventList", "items" :[' + b",".join(spaced) + b'] ,"after":{"items":[1]}}'


@settings(max_examples=100, deadline=None)
@given(items=st.lists(json_grammar.VALUES, max_size=6), spaces=st.lists(_WS, min_size=6))
def test_item_boundaries_are_those_of_a_parser(items: list[bytes], spaces: list[bytes]) -> None:
    body = body_of(items, spaces)
    found = json_scan.outline(body, 100)
    assert found.items is not None
    assert [body[a:b] for a, b in found.items] == items
    # The reference: the standard library's parser, strict, reads each item as in the body.
    document = json_text.loads(body, parse_float=str, parse_int=str)
    parsed = [json_text.loads(body[a:b], parse_float=str, parse_int=str) for a, b in found.items]
    assert parsed == document["items"]
    assert set(found.members) == {b'"kind"', b'"items"', b'"after"'}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.one_of(apiserver_json.VALUES, apiserver_json.DEEP_VALUES), max_size=4))
def test_item_boundaries_at_any_depth_and_with_any_bytes(items: list[bytes]) -> None:
    body = body_of(items, [b""] * len(items))
    found = json_scan.outline(body, 100)
    assert found.items is not None
    assert [body[a:b] for a, b in found.items] == items


@settings(max_examples=100, deadline=None)
@given(members=st.lists(st.tuples(json_grammar.STRINGS, json_grammar.VALUES), max_size=6))
def test_members_are_those_of_a_parser(members: list[tuple[bytes, bytes]]) -> None:
    value = b"{" + b",".join(name + b" : " + item for name, item in members) + b"}"
    spans = json_scan.members(value)
    reference = json_text.loads(value, parse_float=str, parse_int=str)
    assert {
        name: json_text.loads(value[a:b], parse_float=str, parse_int=str)
        for name, (a, b) in spans.items()
    } == reference


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet='{}[],:"\\ 01.-+eEtrufalsn\t\x00u', max_size=24))
def test_what_members_accepts_is_what_a_strict_parser_accepts(text: str) -> None:
    raw = text.encode()
    try:
        reference: Any = json_text.loads(raw)
    except ValueError:
        reference = None
    try:
        json_scan.members(raw)
    except ValueError:
        assert not isinstance(reference, dict)
    else:
        assert isinstance(reference, dict)


@settings(max_examples=60, deadline=None)
@given(items=st.lists(apiserver_json.VALUES, min_size=1, max_size=4), data=st.data())
def test_every_torn_body_is_refused(items: list[bytes], data: st.DataObject) -> None:
    body = body_of(items, [b""] * len(items))
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(ValueError):
        json_scan.outline(body[:cut], 100)
    with pytest.raises(ValueError):
        json_scan.members(body[:cut])


@pytest.mark.parametrize("depth", [1102, 4002, apiserver_json.GO_MAX_DEPTH, 50_000])
def test_deep_members_with_bytes_that_are_not_utf8(depth: int) -> None:
    deep = apiserver_json.nested(depth, b'"\xe9\xff\xfe"', objects=depth % 2 == 0)
    value = b'{"auditID":"a","requestObject":' + deep + b',"annotations":{"n":"\xe9\xff\xfe"}}'
    spans = json_scan.members(value)
    assert value[slice(*spans["requestObject"])] == deep
    assert value[slice(*spans["annotations"])] == b'{"n":"\xe9\xff\xfe"}'
    found = json_scan.outline(b'{"items":[' + value + b"," + value + b"]}", 2)
    assert found.items is not None and len(found.items) == 2


@pytest.mark.parametrize(
    "value",
    [b'{"a":1', b'{"a":01}', b'{"a":[}', b"[1]", b'{"a":1}x', b'{"a" 1}', b'{"a":"\x01"}',
     b"{,}", b'{"a":1,}', b'{"a":tru}', b'{"a":NaN}', b'{"a":"\\x"}', b'{"a":1}}', b""],
)  # fmt: skip
def test_members_refuses_what_is_no_json_object(value: bytes) -> None:
    with pytest.raises(ValueError):
        json_scan.members(value)


def test_the_item_bound_stops_the_scan() -> None:
    body = b'{"kind":"EventList","items":[' + b"1," * 1_000_000 + b"1]}"
    with pytest.raises(TooManyItems):
        json_scan.outline(body, 4000)
    assert json_scan.outline(b'{"items":[1,2,3]}', 3).items == [(10, 11), (12, 13), (14, 15)]
    assert json_scan.outline(b'{"items":[]}', 0).items == []
