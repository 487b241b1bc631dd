"""The event the alerts sink hands the rules gives the same alerts as the whole decoded event."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from audit_common.samples import sample_events
from consumers.events import decode
from consumers.rules.ruleset import DEFAULT_RULES, RuleSet, load_rules
from consumers.sinks.alerts_event import for_rules
from tests.support.events import audit_events

# Rules reading what is deferred, and the whole event.
RESPONSE_RULES = """\
- rule: Response Named
  desc: reads the response object
  condition: ka.resp.name exists or jevt.value[/responseObject/kind] exists
  output: "%ka.resp.name %jevt.value[/responseObject/kind] %jevt.value[/responseObject/items/0]"
  priority: INFO
  source: k8s_audit
  tags: [test]
- rule: Whole Event
  desc: reads the whole event
  condition: ka.verb = list and jevt.obj contains responseObject
  output: "%ka.user.name"
  priority: INFO
  source: k8s_audit
  tags: [test]
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    extra: Path = tmp_path_factory.mktemp("rules") / "response.yaml"
    extra.write_text(RESPONSE_RULES)
    return load_rules([DEFAULT_RULES, extra])


def published() -> list[bytes]:
    """Corpus and sample events as records carry them, and one whose response holds a number
    beyond orjson (the slow path decodes it)."""
    values = [orjson.dumps(event) for event in [*audit_events(), *sample_events(600, seed=7)]]
    beyond = orjson.dumps({**audit_events()[0], "responseObject": {"kind": "Status"}})
    return [*values, beyond.replace(b'"kind":"Status"', b'"kind":"Status","n":1' + b"0" * 30)]


def test_the_same_alerts_as_the_whole_event(rules: RuleSet) -> None:
    deferred = 0
    for offset, value in enumerate(published()):
        consumed = decode(value, [], topic="t", partition=0, offset=offset)
        view = for_rules(consumed)
        deferred += view is not consumed.data
        assert rules.evaluate(view) == rules.evaluate(consumed.data), value[:200]
    assert deferred > 50  # the samples log list responses


def test_the_response_is_decoded_once_read() -> None:
    event = next(e for e in sample_events(200, seed=3) if "responseObject" in e)
    consumed = decode(orjson.dumps(event), [], topic="t", partition=0, offset=0)
    view = for_rules(consumed)
    assert orjson.loads(orjson.dumps(view)) == consumed.data  # written as it came
    assert view.get("responseObject") == event["responseObject"]
    assert view["responseObject"] == event["responseObject"]
    assert dict(view) == consumed.data
