"""Alerts bounded: each %field value and the whole alert cut, with a visible marker."""

from __future__ import annotations

import orjson

from consumers.rules.bounds import cut_text, cut_value
from consumers.rules.fields import bind_field
from consumers.rules.model import Alert, Priority
from consumers.rules.output import OutputFormat

STAMP = "2026-12-01T10:00:00Z"


def test_text_within_the_limit_is_left_alone_and_longer_text_is_cut_with_a_marker() -> None:
    assert cut_text("abc", 3) == ("abc", False)
    assert cut_text("abcdef", 3) == ("abc...[truncated: 3 of 6 characters cut]", True)


def test_a_list_keeps_its_first_items_then_says_how_many_are_gone() -> None:
    assert cut_value(["a" * 4, "b" * 4, "c" * 4, "d"], 8) == (
        ["aaaa", "bbbb", "...[truncated: 2 of 4 items cut]"],
        True,
    )
    assert cut_value([1, None, "x"], 100) == ([1, None, "x"], False)
    assert cut_value(12, 1) == (12, False)


def test_render_cuts_each_value_in_the_text_and_in_the_fields() -> None:
    event = {
        "auditID": "a",
        "stageTimestamp": STAMP,
        "user": {"username": "u" * 50, "groups": ["g" * 30] * 5},
    }
    output = OutputFormat.parse("%ka.user.name in %ka.user.groups", bind_field)
    text, fields, cut = output.render(event, {}, 0, "Notice", field_max=10)
    assert cut
    assert text == (
        "00:00:00.000000000: Notice uuuuuuuuuu...[truncated: 40 of 50 characters cut] "
        "in (ggggggggg...[truncated: 146 of 156 characters cut]"
    )
    assert fields["ka.user.name"] == "u" * 10 + "...[truncated: 40 of 50 characters cut]"
    assert fields["ka.user.groups"][-1] == "...[truncated: 4 of 5 items cut]"
    assert output.render(event, {}, 0, "Notice").cut is False


def test_an_alert_over_the_limit_is_cut_to_fit_and_says_so() -> None:
    alert = Alert(
        STAMP, "Big", Priority.WARNING, "o" * 100_000, "k8s_audit", ("k8s",),
        {"a": "x" * 100_000, "b": ["y" * 1000] * 300, "evt.time": 1},
    )  # fmt: skip
    body, cut = alert.bounded_json(65536)
    assert cut and len(body) <= 65536
    document = orjson.loads(body)
    assert "...[truncated: " in document["output"] and document["rule"] == "Big"
    assert document["output_fields"]["evt.time"] == 1
    small = Alert(STAMP, "Small", Priority.NOTICE, "o", "k8s_audit", (), {})
    assert small.bounded_json(65536) == (small.to_json(), False)
