"""Rules files of the shapes falcosecurity's published k8saudit rules files have had across
versions, written here: read as Falco's loader reads them (``rule_loader::reader::read``: every
YAML document, null documents and null items skipped)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from audit_common.errors import RulesError
from consumers.rules.ruleset import RuleSet, load_rules

# As k8s_audit_rules.yaml 0.6.0 has it: a licence header of comments, required_engine_version,
# required_plugin_versions with alternatives, comment-only stretches between items, and a `-`
# alone on a line (a null item) after the eks_allowed_k8s_users list.
K8SAUDIT_LIKE = """\
#
# Copyright (C) 2023 The Falco Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
#

- required_engine_version: 15

- required_plugin_versions:
  - name: k8saudit
    version: 0.6.0
    alternatives:
      - name: k8saudit-eks
        version: 0.2.0
      - name: k8saudit-gke
        version: 0.1.0
  - name: json
    version: 0.7.0

# Like always_true/always_false, but works with k8s audit events

- macro: k8s_audit_always_true
  condition: (jevt.rawtime exists)

- list: k8s_audit_stages
  items: ["ResponseComplete"]

# This macro selects the set of Audit Events used by the below rules.
- macro: kevt
  condition: (jevt.value[/stage] in (k8s_audit_stages))

- macro: kevt_started
  condition: (jevt.value[/stage]=ResponseStarted)

# If you wish to restrict activity to a specific set of users, override/append to this list.
# users created by kops are included
- list: vertical_pod_autoscaler_users
  items: ["vpa-recommender", "vpa-updater"]

- list: allowed_k8s_users
  items: [
    "minikube", "minikube-user", "kubelet", "kops", "admin", "kube", "kube-proxy",
    vertical_pod_autoscaler_users,
    ]

- list: eks_allowed_k8s_users
  items:
    - eks:node-manager
    - eks:certificate-controller
-
- list: k8s_audit_allowed_users
  items: [kubelet, kube-scheduler]

# Comment-only stretch
# spanning several lines
#
#

- rule: Disallowed K8s User
  desc: Detect any k8s operation by users outside of an allowed set of users.
  condition: >
    kevt and non_system_user and not ka.user.name in (allowed_k8s_users)
    and not ka.user.name in (eks_allowed_k8s_users)
  output: >
    K8s Operation performed by user not in allowed list of users (user=%ka.user.name
    target=%ka.target.name/%ka.target.resource verb=%ka.verb uri=%ka.uri
    resp=%ka.response.code)
  priority: WARNING
  source: k8s_audit
  tags: [k8s]

- macro: non_system_user
  condition: >
    (not ka.user.name in (allowed_k8s_users) and not ka.user.name startswith "system:")
"""


Load = Callable[[str], RuleSet]


@pytest.fixture
def load(tmp_path: Path) -> Load:
    def load(text: str) -> RuleSet:
        path = tmp_path / "rules.yaml"
        path.write_text(textwrap.dedent(text))
        return load_rules([path])

    return load


def test_the_k8saudit_file_with_a_null_item_loads(load: Load) -> None:
    rules = load(K8SAUDIT_LIKE)
    assert rules.rule_names == ("Disallowed K8s User",)
    event = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "auditID": "a1",
        "stage": "ResponseComplete",
        "stageTimestamp": "2026-12-01T10:00:00Z",
        "user": {"username": "mallory"},
        "verb": "get",
    }
    assert [alert.rule for alert in rules.evaluate(event)] == ["Disallowed K8s User"]
    for allowed in ("eks:node-manager", "kops", "vpa-updater"):
        assert rules.evaluate(dict(event, user={"username": allowed})) == []


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "# only comments\n# and more\n",
        "---\n",
        "---\n# a document of comments\n---\n",
        "-\n-\n",
    ],
)
def test_empty_and_comment_only_files_hold_no_rules(load: Load, text: str) -> None:
    assert load(text).rule_count == 0


def test_several_documents_in_one_file_are_read_in_order(load: Load) -> None:
    rules = load(
        """\
        - list: verbs
          items: [create]
        ---
        # the second document appends to what the first defined
        - list: verbs
          items: [delete]
          append: true
        ---
        ---
        - rule: Writes
          desc: d
          condition: ka.verb in (verbs)
          output: "%ka.verb"
          priority: NOTICE
          source: k8s_audit
        """
    )
    stamp = "2026-12-01T10:00:00Z"
    fired = [
        verb
        for verb in ("create", "delete", "get")
        if rules.evaluate({"auditID": "a1", "verb": verb, "stageTimestamp": stamp})
    ]
    assert fired == ["create", "delete"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Falco: "Rules content is not yaml array of objects", in any document.
        ("- list: a\n  items: []\n---\nrule: x\n", "a rules file is a YAML list of items"),
        # Items are numbered through the file, null items and documents included.
        ("- list: a\n  items: []\n-\n---\n- 3\n", "item 3: not a mapping"),
    ],
)
def test_a_document_or_item_of_the_wrong_shape_is_named(
    load: Load, text: str, message: str
) -> None:
    with pytest.raises(RulesError, match=message):
        load(text)
