"""Rules files as Falco reads them: items, append, override, exceptions, enabled, sources,
visibility of macros and lists, and errors naming file, item and problem."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from audit_common.errors import RulesError
from consumers.rules.ruleset import Priority, RuleSet, load_rules

Load = Callable[..., RuleSet]


@pytest.fixture
def load(tmp_path: Path) -> Load:
    """Writes each text to its own rules file (1.yaml, 2.yaml ...) and loads them in order."""

    def load(*texts: str, min_priority: Priority = Priority.DEBUG) -> RuleSet:
        paths = []
        for number, text in enumerate(texts, 1):
            path = tmp_path / f"{number}.yaml"
            path.write_text(textwrap.dedent(text))
            paths.append(path)
        return load_rules(paths, min_priority=min_priority)

    return load


def event(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "auditID": "5d6e",
        "stage": "ResponseComplete",
        "verb": "create",
        "requestURI": "/api/v1/namespaces/payments/pods",
        "user": {"username": "alice", "groups": ["system:authenticated"]},
        "objectRef": {"resource": "pods", "namespace": "payments", "name": "web"},
        "responseStatus": {"code": 201},
        "stageTimestamp": "2026-11-30T10:00:00.123456Z",
    }
    base.update(changes)
    return base


def fired(rules: RuleSet, **changes: Any) -> list[str]:
    return [alert.rule for alert in rules.evaluate(event(**changes))]


BASE = """
- list: write_verbs
  items: [create, update, patch]
- macro: kwrite
  condition: ka.verb in (write_verbs)
- rule: Pod Written
  desc: a pod is written
  condition: kwrite and ka.target.resource = pods
  output: pod written (user=%ka.user.name)
  priority: WARNING
  source: k8s_audit
  tags: [k8s]
"""


def test_a_rule_with_macro_and_list(load: Load) -> None:
    rules = load(BASE)
    assert rules.rule_names == ("Pod Written",)
    assert fired(rules) == ["Pod Written"]
    assert fired(rules, verb="delete") == []


def test_append_to_list_macro_and_rule(load: Load) -> None:
    rules = load(
        BASE,
        """
        - list: write_verbs
          items: [delete]
          append: true
        - macro: kwrite
          condition: or ka.verb = deletecollection
          append: true
        - rule: Pod Written
          condition: and not ka.user.name = alice
          output: by %ka.verb
          append: true
        """,
    )
    assert fired(rules) == []
    assert fired(rules, user={"username": "bob"}, verb="delete") == ["Pod Written"]
    # the macro's appended text joins its condition: (verb in list or verb = deletecollection)
    alerts = rules.evaluate(event(user={"username": "bob"}, verb="deletecollection"))
    assert [alert.output.split(": Warning ")[1] for alert in alerts] == [
        "pod written (user=bob) by deletecollection"
    ]


def test_override_append_and_replace(load: Load) -> None:
    rules = load(
        BASE,
        """
        - list: write_verbs
          items: [delete]
          override:
            items: replace
        - rule: Pod Written
          condition: and ka.user.name = alice
          priority: critical
          tags: [extra]
          override:
            condition: append
            priority: replace
            tags: append
        """,
    )
    assert fired(rules) == []  # create is no longer a write verb
    (alert,) = rules.evaluate(event(verb="delete"))
    assert alert.priority is Priority.CRITICAL
    assert alert.tags == ("extra", "k8s")
    assert fired(rules, verb="delete", user={"username": "bob"}) == []


def test_a_redefinition_replaces_the_rule_in_place(load: Load) -> None:
    rules = load(
        BASE,
        """
        - rule: Other
          desc: d
          condition: ka.verb = create
          output: o
          priority: INFO
          source: k8s_audit
        - rule: Pod Written
          desc: d
          condition: ka.verb = delete
          output: o
          priority: INFO
          source: k8s_audit
        """,
    )
    assert rules.rule_names == ("Pod Written", "Other")
    assert fired(rules) == ["Other"]
    assert fired(rules, verb="delete") == ["Pod Written"]


def test_enabled_toggles_an_existing_rule(load: Load) -> None:
    rules = load(BASE, "- rule: Pod Written\n  enabled: false\n")
    assert rules.rule_count == 0
    assert rules.disabled == 1
    rules = load(
        BASE,
        "- rule: Pod Written\n  enabled: false\n",
        "- rule: Pod Written\n  enabled: true\n",
    )
    assert fired(rules) == ["Pod Written"]


EXCEPTIONS = """
- list: trusted_users
  items: [ci-bot, deployer]
- rule: Pod Written
  desc: d
  condition: ka.verb = create and ka.target.resource = pods
  output: o
  priority: NOTICE
  source: k8s_audit
  exceptions:
    - name: user_in_namespace
      fields: [ka.user.name, ka.target.namespace]
      values:
        - [alice, payments]
    - name: by_prefix
      fields: [ka.user.name, ka.target.name]
      comps: [startswith, in]
      values:
        - ["system:", [kube-proxy, coredns]]
    - name: trusted
      fields: ka.user.name
      values: [trusted_users, carol]
"""


def test_exceptions(load: Load) -> None:
    rules = load(EXCEPTIONS)
    assert fired(rules) == []  # alice in payments
    assert fired(rules, objectRef={"resource": "pods", "namespace": "default"}) == ["Pod Written"]
    assert fired(rules, user={"username": "bob"}) == ["Pod Written"]
    system = {"username": "system:node:a"}
    assert fired(rules, user=system, objectRef={"resource": "pods", "name": "coredns"}) == []
    assert fired(rules, user=system, objectRef={"resource": "pods", "name": "web"}) == [
        "Pod Written"
    ]
    for user in ("ci-bot", "deployer", "carol"):  # a list named in values is expanded
        assert fired(rules, user={"username": user}) == []


def test_exception_values_appended_later(load: Load) -> None:
    rules = load(
        EXCEPTIONS,
        """
        - rule: Pod Written
          exceptions:
            - name: user_in_namespace
              values:
                - [bob, payments]
            - name: by_agent
              fields: [ka.useragent]
              comps: [startswith]
              values: [[argocd/]]
          override:
            exceptions: append
        """,
    )
    assert fired(rules, user={"username": "bob"}) == []
    assert fired(rules, user={"username": "erin"}) == ["Pod Written"]
    assert fired(rules, user={"username": "erin"}, userAgent="argocd/2.1") == []


def test_lists_of_lists_and_literals_in_parentheses(load: Load) -> None:
    rules = load(
        """
        - list: reads
          items: [get, list]
        - list: all_verbs
          items: [reads, watch, "create"]
        - rule: Verbs
          desc: d
          condition: ka.verb in (all_verbs, not_a_list, "reads")
          output: o
          priority: DEBUG
          source: k8s_audit
        """
    )
    for verb in ("get", "list", "watch", "create", "not_a_list", "reads"):
        assert fired(rules, verb=verb) == ["Verbs"], verb
    assert fired(rules, verb="all_verbs") == []
    assert fired(rules, verb="delete") == []


def test_rules_see_macros_and_lists_defined_after_them(load: Load) -> None:
    rules = load(
        """
        - rule: Early
          desc: d
          condition: later_macro and ka.user.name in (later_list)
          output: o
          priority: DEBUG
          source: k8s_audit
        - macro: later_macro
          condition: ka.verb = create
        - list: later_list
          items: [alice]
        """
    )
    assert fired(rules) == ["Early"]
    assert fired(rules, user={"username": "later_list"}) == []


def test_macros_and_lists_see_only_what_is_defined_before_them(load: Load) -> None:
    rules = load(
        """
        - list: outer
          items: [inner, get]
        - list: inner
          items: [create]
        - rule: Nested
          desc: d
          condition: ka.verb in (outer)
          output: o
          priority: DEBUG
          source: k8s_audit
        """
    )
    assert fired(rules) == []  # inner was defined after outer: a literal in it
    assert fired(rules, verb="inner") == ["Nested"]
    with pytest.raises(RulesError, match=r"macro 'early': undefined macro 'later'"):
        load(
            """
            - macro: early
              condition: later
            - macro: later
              condition: ka.verb = create
            - rule: R
              desc: d
              condition: early
              output: o
              priority: DEBUG
              source: k8s_audit
            """
        )


def test_a_macro_appended_after_a_definition_sees_it(load: Load) -> None:
    rules = load(
        """
        - macro: writes
          condition: ka.verb = create
        - macro: is_alice
          condition: ka.user.name = alice
        - macro: writes
          condition: and is_alice
          append: true
        - rule: R
          desc: d
          condition: writes
          output: o
          priority: DEBUG
          source: k8s_audit
        """
    )
    assert fired(rules) == ["R"]
    assert fired(rules, user={"username": "bob"}) == []


def test_rules_of_other_sources_are_skipped_uncompiled_and_counted(load: Load) -> None:
    rules = load(
        BASE,
        """
        - macro: spawned_process
          condition: evt.type = execve and proc.name exists
        - rule: Shell In Container
          desc: d
          condition: spawned_process and proc.name = bash
          output: shell %proc.cmdline
          priority: WARNING
        - rule: Cloudtrail Thing
          desc: d
          condition: ct.name = x
          output: o
          priority: WARNING
          source: aws_cloudtrail
        """,
    )
    assert rules.rule_names == ("Pod Written",)
    assert dict(rules.skipped_sources) == {"syscall": 1, "aws_cloudtrail": 1}
    assert rules.skipped == 2


def test_min_priority_and_skip_if_unknown_filter(load: Load) -> None:
    text = """
        - rule: Loud
          desc: d
          condition: ka.verb = create
          output: o
          priority: ERROR
          source: k8s_audit
        - rule: Quiet
          desc: d
          condition: ka.verb = create
          output: o
          priority: INFORMATIONAL
          source: k8s_audit
        - rule: Future
          desc: d
          condition: ka.verb = create and ka.some.future.field = x
          output: o
          priority: ERROR
          source: k8s_audit
          skip-if-unknown-filter: true
        """
    rules = load(text, min_priority=Priority.WARNING)
    assert rules.rule_names == ("Loud",)
    assert rules.below_priority == 1
    assert load(text).rule_names == ("Loud", "Quiet")


def test_required_versions_are_accepted(load: Load) -> None:
    rules = load(
        """
        - required_engine_version: 0.31.0
        - required_plugin_versions:
            - name: k8saudit
              version: 0.7.0
              alternatives:
                - name: k8saudit-eks
                  version: 0.4.0
            - name: json
              version: 0.7.0
        """,
        BASE,
    )
    assert rules.rule_count == 1


def test_empty_file_loads_nothing(load: Load) -> None:
    assert load("").rule_count == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- rule: [unclosed\n", r"2\.yaml: not valid YAML"),
        ("rule: x\n", r"2\.yaml: a rules file is a YAML list of items"),
        ("- nothing: here\n", r"2\.yaml: item 1: unknown item"),
        (
            "- rule: Bad Field\n  desc: d\n  condition: ka.verbb = get\n  output: o\n"
            "  priority: INFO\n  source: k8s_audit\n",
            r"2\.yaml: rule 'Bad Field': unknown field 'ka\.verbb'",
        ),
        (
            "- rule: Bad Output\n  desc: d\n  condition: ka.verb = get\n  output: '%ka.nope'\n"
            "  priority: INFO\n  source: k8s_audit\n",
            r"2\.yaml: rule 'Bad Output': output: unknown field 'ka\.nope'",
        ),
        (
            "- rule: Pct\n  desc: d\n  condition: ka.verb = get\n  output: 100% sure\n"
            "  priority: INFO\n  source: k8s_audit\n",
            r"2\.yaml: rule 'Pct': output: invalid formatting token",
        ),
        (
            "- rule: No Macro\n  desc: d\n  condition: kwrite and nomacro\n  output: o\n"
            "  priority: INFO\n  source: k8s_audit\n",
            r"2\.yaml: rule 'No Macro': undefined macro 'nomacro'",
        ),
        (
            "- rule: Typo\n  desc: d\n  condition: ka.verb = get\n  output: o\n"
            "  priority: INFO\n  source: k8s_audit\n  tag: [x]\n",
            r"2\.yaml: rule 'Typo': unknown key\(s\) 'tag'",
        ),
        (
            "- rule: No Condition\n  desc: d\n  output: o\n  priority: INFO\n",
            r"2\.yaml: rule 'No Condition': a rule needs 'condition'",
        ),
        (
            "- rule: Loud\n  desc: d\n  condition: ka.verb = get\n  output: o\n"
            "  priority: SEVERE\n  source: k8s_audit\n",
            r"2\.yaml: rule 'Loud': unknown priority 'SEVERE'",
        ),
        (
            "- rule: Missing\n  condition: and ka.verb = get\n  append: true\n",
            r"2\.yaml: rule 'Missing': append or override of a rule that is not defined",
        ),
        (
            "- list: nope\n  items: [a]\n  append: true\n",
            r"2\.yaml: list 'nope': append to a list that is not defined",
        ),
        (
            "- macro: broken\n  condition: ka.verb = (\n- rule: Uses Broken\n  desc: d\n"
            "  condition: broken\n  output: o\n  priority: INFO\n  source: k8s_audit\n",
            r"2\.yaml: macro 'broken': expected a value",
        ),
        (
            "- rule: Pod Written\n  priority: INFO\n  override:\n    priority: append\n",
            r"rule 'Pod Written': 'priority' cannot be appended",
        ),
        (
            "- rule: Bad Op\n  desc: d\n  condition: ka.user.groups = x\n  output: o\n"
            "  priority: INFO\n  source: k8s_audit\n",
            r"rule 'Bad Op': list field 'ka\.user\.groups' only supports",
        ),
        (
            "- rule: Pod Written\n  exceptions:\n    - name: new_one\n      values: [[a]]\n"
            "  append: true\n",
            r"rule 'Pod Written': exception 'new_one' needs 'fields'",
        ),
        (
            "- rule: Bad Exception\n  desc: d\n  condition: ka.verb = get\n  output: o\n"
            "  priority: INFO\n  source: k8s_audit\n  exceptions:\n    - name: pair\n"
            "      fields: [ka.user.name, ka.verb]\n      values: [[only-one]]\n",
            r"rule 'Bad Exception': exception 'pair': each value must list 2 item\(s\)",
        ),
        (
            "- rule: Pod Written\n  exceptions:\n    - name: single\n      fields: ka.verb\n"
            "      values: [[a, b]]\n  append: true\n",
            r"rule 'Pod Written': exception 'single': with one field, values are strings",
        ),
        (
            "- macro: m\n  condition: m2\n- macro: m2\n  condition: m\n  append: false\n"
            "- macro: m\n  condition: or m2\n  append: true\n- rule: Loop\n  desc: d\n"
            "  condition: m\n  output: o\n  priority: INFO\n  source: k8s_audit\n",
            r"refers to itself",
        ),
    ],
)
def test_errors_name_file_item_and_problem(load: Load, text: str, message: str) -> None:
    with pytest.raises(RulesError, match=message):
        load(BASE, text)


def test_an_unreadable_file_is_a_rules_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"missing\.yaml: cannot read the rules file"):
        load_rules([tmp_path / "missing.yaml"])
