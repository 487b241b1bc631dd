"""``jevt.obj``/``json.obj`` on an event nested deeper than orjson writes (255): the field is the
event as indented JSON all the same, so a rule reading it still fires."""

from __future__ import annotations

import json
from pathlib import Path

from consumers.events import decode
from consumers.rules.ruleset import load_rules
from consumers.sinks.alerts_event import for_rules

RULE = """\
- rule: Deep
  desc: d
  condition: jevt.obj contains "bottom"
  output: "%json.obj"
  priority: NOTICE
  source: k8s_audit
"""


def deep(depth: int) -> bytes:
    inner: object = "bottom\u0000"
    for _ in range(depth):
        inner = [inner]
    event = {
        "auditID": "a",
        "stageTimestamp": "2026-12-01T10:00:00Z",
        "verb": "get",
        "requestObject": {"items": inner},
        "responseObject": {"kind": "Status"},
    }
    return json.dumps(event).encode()  # the standard library writes what orjson will not


def test_a_rule_reading_the_whole_event_fires_on_an_event_deeper_than_orjson_writes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(RULE)
    rules = load_rules([path])
    event = decode(deep(300), [], topic="t", partition=0, offset=0)
    [alert] = rules.evaluate(for_rules(event))
    text = alert.output_fields["json.obj"]
    assert json.loads(text)["requestObject"]["items"][0][0][0]
    assert text.startswith('{\n  "auditID": "a",')
