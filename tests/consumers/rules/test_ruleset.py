"""RuleSet: evaluation in file order through the index, alerts in Falco's JSON output format,
priorities, and robustness against any event shape."""

from __future__ import annotations

import textwrap
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_common.samples import sample_events
from consumers.rules.ruleset import DEFAULT_RULES, Alert, Priority, RuleSet, load_rules

RULES = """
- list: sensitive_resources
  items: [secrets, configmaps]
- rule: Exec Into Pod
  desc: kubectl exec
  condition: ka.target.resource = pods and ka.target.subresource = exec
  output: >
    Exec into pod (user=%ka.user.name pod=%ka.target.name ns=%ka.target.namespace
    groups=%ka.user.groups cmd=%ka.uri.param[command] stage=%jevt.value[/stage])
  priority: NOTICE
  source: k8s_audit
  tags: [k8s, mitre_execution]
- rule: Sensitive Read
  desc: d
  condition: ka.verb in (get, list) and ka.target.resource in (sensitive_resources)
  output: "%ka.verb of %ka.target.resource by %ka.user.name"
  priority: WARNING
  source: k8s_audit
- rule: Anything By Anonymous
  desc: d
  condition: ka.user.name = system:anonymous
  output: anonymous %ka.verb
  priority: CRITICAL
  source: k8s_audit
  tags: [k8s]
"""

EXEC = {
    "auditID": "b0e3",
    "stage": "ResponseStarted",
    "verb": "create",
    "requestURI": "/api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true",
    "user": {"username": "alice", "groups": ["system:authenticated", "team:dev"]},
    "objectRef": {"resource": "pods", "subresource": "exec", "name": "web"},
    "stageTimestamp": "2026-11-30T10:00:00.123456Z",
}


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(textwrap.dedent(RULES))
    return load_rules([path])


def test_alert_in_falco_json_format(rules: RuleSet) -> None:
    (alert,) = rules.evaluate(EXEC)
    assert alert.rule == "Exec Into Pod"
    assert alert.priority is Priority.NOTICE
    assert alert.time == "2026-11-30T10:00:00.123456000Z"
    assert alert.output == (
        "10:00:00.123456000: Notice Exec into pod (user=alice pod=web ns=<NA> "
        "groups=(system:authenticated,team:dev) cmd=sh stage=ResponseStarted)"
    )
    document = orjson.loads(alert.to_json())
    assert list(document) == [
        "hostname",
        "output",
        "output_fields",
        "priority",
        "rule",
        "source",
        "tags",
        "time",
    ]
    assert document["priority"] == "Notice"
    assert document["source"] == "k8s_audit"
    assert document["tags"] == ["k8s", "mitre_execution"]
    assert document["time"] == "2026-11-30T10:00:00.123456000Z"
    assert document["hostname"] == rules.hostname
    assert document["output_fields"] == {
        "evt.time": 1796032800123456000,
        "jevt.value[/stage]": "ResponseStarted",
        "ka.target.name": "web",
        "ka.target.namespace": None,
        "ka.uri.param[command]": "sh",
        "ka.user.groups": ["system:authenticated", "team:dev"],
        "ka.user.name": "alice",
    }
    assert list(document["output_fields"]) == sorted(document["output_fields"])


def test_alert_to_json_is_one_line_with_sorted_tags() -> None:
    alert = Alert(
        time="2026-11-30T10:00:00.000000001Z",
        rule="R",
        priority=Priority.INFORMATIONAL,
        output="o",
        source="k8s_audit",
        tags=("z", "a"),
        output_fields={"b": 1, "a": None},
        hostname="node-1",
    )
    assert alert.to_json() == (
        b'{"hostname":"node-1","output":"o","output_fields":{"a":null,"b":1},'
        b'"priority":"Informational","rule":"R","source":"k8s_audit","tags":["a","z"],'
        b'"time":"2026-11-30T10:00:00.000000001Z"}'
    )


def test_all_matching_rules_fire_in_file_order(rules: RuleSet) -> None:
    event = {
        **EXEC,
        "verb": "get",
        "user": {"username": "system:anonymous"},
        "objectRef": {"resource": "secrets", "name": "db"},
    }
    assert [alert.rule for alert in rules.evaluate(event)] == [
        "Sensitive Read",
        "Anything By Anonymous",
    ]
    assert rules.evaluate(event)[0].output.endswith(": Warning get of secrets by system:anonymous")


def test_nanosecond_timestamps_and_events_the_plugin_drops(rules: RuleSet) -> None:
    (alert,) = rules.evaluate({**EXEC, "stageTimestamp": "2026-11-30T10:00:00.987654321Z"})
    assert alert.time == "2026-11-30T10:00:00.987654321Z"
    assert alert.output.startswith("10:00:00.987654321: Notice ")
    without = {key: value for key, value in EXEC.items() if key != "stageTimestamp"}
    assert rules.evaluate(without) == []
    assert rules.evaluate({**EXEC, "stageTimestamp": "yesterday"}) == []


def test_the_index_changes_no_result() -> None:
    rules = load_rules([DEFAULT_RULES])
    for event in sample_events(1000, seed=7):
        expected = [rule.name for rule in rules.rules if rule.condition(event, {})]
        assert [alert.rule for alert in rules.evaluate(event)] == expected


def test_default_rules_load_and_fire_on_samples() -> None:
    rules = load_rules([DEFAULT_RULES])
    assert rules.rule_count > 0
    fired = {alert.rule for event in sample_events(500) for alert in rules.evaluate(event)}
    assert fired


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    ["auditID", "verb", "user", "objectRef", "requestURI", "stage", "responseStatus", "x"]
)


@settings(deadline=None)
@given(st.dictionaries(_KEYS, json_values, max_size=6))
def test_evaluate_never_raises(rules: RuleSet, shape: dict[str, Any]) -> None:
    event = {**shape, "stageTimestamp": "2026-11-30T10:00:00Z"}
    for alert in rules.evaluate(event):
        orjson.loads(alert.to_json())


@pytest.mark.parametrize(
    ("text", "priority"),
    [
        ("EMERGENCY", Priority.EMERGENCY),
        ("alert", Priority.ALERT),
        ("Critical", Priority.CRITICAL),
        ("error", Priority.ERROR),
        ("WARNING", Priority.WARNING),
        ("notice", Priority.NOTICE),
        ("INFO", Priority.INFORMATIONAL),
        ("Informational", Priority.INFORMATIONAL),
        (" debug ", Priority.DEBUG),
    ],
)
def test_priority_names(text: str, priority: Priority) -> None:
    assert Priority.parse(text) is priority


def test_priority_order_and_labels() -> None:
    assert Priority.EMERGENCY < Priority.WARNING < Priority.DEBUG
    assert [priority.label for priority in Priority] == [
        "Emergency",
        "Alert",
        "Critical",
        "Error",
        "Warning",
        "Notice",
        "Informational",
        "Debug",
    ]
    with pytest.raises(ValueError, match="unknown priority 'loud'"):
        Priority.parse("loud")
