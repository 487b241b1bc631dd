"""Output templates formatted as Falco formats them: text with <NA> and (a,b), fields as JSON
values, the time and priority prefix, widths, and template errors."""

from __future__ import annotations

import pytest

from audit_common.errors import RulesError
from consumers.rules.fields import Value, bind_field
from consumers.rules.output import OutputFormat, event_time_ns, format_time

EVENT = {
    "auditID": "77",
    "verb": "get",
    "user": {"username": "bob", "groups": ["a", "b"]},
    "objectRef": {"resource": "secrets", "name": "db"},
    "stageTimestamp": "2026-11-30T23:59:59.000000042Z",
}
NS = event_time_ns(EVENT)


def render(template: str) -> tuple[str, dict[str, object]]:
    assert NS is not None
    cache: dict[str, list[Value]] = {}
    text, fields, _ = OutputFormat.parse(template, bind_field).render(EVENT, cache, NS, "Error")
    return text, fields


def test_prefix_values_missing_values_and_lists() -> None:
    text, fields = render(
        "%ka.user.name read %ka.target.resource/%ka.target.name in %ka.target.namespace "
        "as %ka.user.groups"
    )
    assert text == "23:59:59.000000042: Error bob read secrets/db in <NA> as (a,b)"
    assert fields == {
        "evt.time": NS,
        "ka.user.name": "bob",
        "ka.target.resource": "secrets",
        "ka.target.name": "db",
        "ka.target.namespace": None,
        "ka.user.groups": ["a", "b"],
    }


def test_field_arguments_and_punctuation_after_fields() -> None:
    text, fields = render("user=%jevt.value[/user/username], verb=%ka.verb.")
    assert text.endswith("Error user=bob, verb=get.")
    assert fields["jevt.value[/user/username]"] == "bob"


def test_width_modifier_pads_and_cuts_the_text_only() -> None:
    text, fields = render("[%6ka.verb][%2ka.user.name]")
    assert text.endswith("Error [get   ][bo]")
    assert fields["ka.verb"] == "get"


def test_a_template_without_fields() -> None:
    assert render("nothing to see") == (
        "23:59:59.000000042: Error nothing to see",
        {"evt.time": NS},
    )


@pytest.mark.parametrize("template", ["100% sure", "ends with %", "%(ka.verb)"])
def test_a_percent_that_starts_no_field_is_an_error(template: str) -> None:
    with pytest.raises(ValueError, match="invalid formatting token"):
        OutputFormat.parse(template, bind_field)


def test_an_unknown_field_is_an_error() -> None:
    with pytest.raises(RulesError, match=r"unknown field 'ka\.nope'"):
        OutputFormat.parse("x %ka.nope", bind_field)


def test_event_time_is_the_stage_timestamp() -> None:
    assert NS is not None
    assert format_time(NS) == "2026-11-30T23:59:59.000000042Z"
    assert format_time(event_time_ns({"stageTimestamp": "2026-01-02T03:04:05Z"}) or 0) == (
        "2026-01-02T03:04:05.000000000Z"
    )
    assert event_time_ns({"requestReceivedTimestamp": "2026-01-02T03:04:05Z"}) is None
