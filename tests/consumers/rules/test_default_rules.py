"""The shipped default rules: each fires on the requests it is about, and on no others; under
the shipped audit policy too (deploy/apiserver/audit-policy.yaml), which decides what of a
request each rule gets to see; and on each of Falco's recorded traces as its name says, where
they are beside the clone."""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from audit_common.samples import sample_events
from consumers.rules.ruleset import DEFAULT_RULES, RuleSet, load_rules
from tests.support.audit_policy import AuditPolicy, Event, Request
from tests.support.corpus import corpus_file_events
from tests.support.events import ADMIN, REQUESTS, asked, container, pod_body, pod_created

RULES = (
    "Shell Into Pod",
    "Pod With Host Access Created",
    "Pod Mounting Sensitive Host Path",
    "Binding To Cluster Admin",
    "Role With Wildcard",
    "Role Granting Pod Exec",
    "Secret Read By Unexpected User",
    "Anonymous Request Allowed",
    "ConfigMap With Credentials",
    "NodePort Service Created",
    "System ClusterRole Changed",
    "Service Account Token Created",
    "Unexpected Namespace Created",
)
# As a broad policy logs them (every request at RequestResponse), and as the shipped one does.
TRACED = AuditPolicy.everything()
SHIPPED = AuditPolicy.load()


@cache
def default_rules() -> RuleSet:
    return load_rules([DEFAULT_RULES])


def fired(rules: RuleSet, events: list[Event]) -> list[set[str]]:
    return [{alert.rule for alert in rules.evaluate(event)} for event in events]


def named(kind: str, **changes: Any) -> Request:
    return dataclasses.replace(REQUESTS[kind], **changes)


def forbidden(name: str) -> Request:
    return named(name, allowed=False, code=403)


SYSTEM = {"user": "system:apiserver", "groups": ("system:masters",)}
NODE = ("system:node:node-1", ("system:nodes", "system:authenticated"))
PERSON = ("alice@example.com", ("system:authenticated",))

FIRES: list[tuple[str, str, Request]] = [
    ("Shell Into Pod", "exec", named("exec")),
    ("Shell Into Pod", "attach", named("attach")),
    ("Shell Into Pod", "exec over a websocket (get)", named("exec", verb="get")),
    ("Pod With Host Access Created", "hostNetwork", named("pod hostNetwork")),
    ("Pod With Host Access Created", "privileged", named("pod privileged")),
    (
        "Pod With Host Access Created",
        "privileged 2nd container",
        named("pod privileged 2nd container"),
    ),
    (
        "Pod With Host Access Created",
        "2nd container privileged, 1st without securityContext",
        named("pod privileged 2nd container, 1st without securityContext"),
    ),
    ("Pod With Host Access Created", "hostPID", pod_created(pod_body(hostPID=True))),
    ("Pod With Host Access Created", "hostIPC", pod_created(pod_body(hostIPC=True))),
    (
        "Pod With Host Access Created",
        "allow-listed image outside kube-system",
        pod_created(
            pod_body(container(image="registry.k8s.io/kube-proxy:v1.31.2"), hostNetwork=True)
        ),
    ),
    ("Pod Mounting Sensitive Host Path", "/etc", named("pod mounting /etc")),
    (
        "Pod Mounting Sensitive Host Path",
        "/etc, 2 containers",
        named("pod mounting /etc, 2 containers"),
    ),
    (
        "Pod Mounting Sensitive Host Path",
        "docker socket",
        pod_created(pod_body(host_paths=("/tmp/cache", "/var/run/docker.sock"))),
    ),
    ("Binding To Cluster Admin", "clusterrolebinding", named("binding to cluster-admin")),
    ("Role With Wildcard", "verbs", named("clusterrole with wildcard verbs")),
    ("Role With Wildcard", "resources", named("clusterrole with wildcard resources")),
    ("Role Granting Pod Exec", "pods/exec", named("clusterrole granting pods/exec")),
    (
        "Secret Read By Unexpected User",
        "get",
        asked("get", "secrets", user=PERSON, name="db-password"),
    ),
    (
        "Secret Read By Unexpected User",
        "list by a service account",
        named("secret read", verb="list", name=""),
    ),
    ("Anonymous Request Allowed", "create", named("anonymous creates a namespace")),
    ("Anonymous Request Allowed", "unauthenticated group", named("anonymous lists pods")),
    ("ConfigMap With Credentials", "aws keys", named("configmap with credentials")),
    ("ConfigMap With Credentials", "private key", named("configmap with a private key")),
    (
        "ConfigMap With Credentials",
        "password, updated",
        named("configmap", verb="update", code=200, body={"data": {"db.password": "hunter2"}}),
    ),
    ("NodePort Service Created", "create", named("service NodePort")),
    ("System ClusterRole Changed", "patch", named("system clusterrole patched")),
    ("System ClusterRole Changed", "delete", named("system clusterrole deleted")),
    ("Service Account Token Created", "TokenRequest by a person", named("token request")),
    ("Unexpected Namespace Created", "by a user", named("user creates a namespace")),
    ("Unexpected Namespace Created", "other user", named("another user creates a namespace")),
]

SILENT: list[tuple[str, str, Request]] = [
    ("Shell Into Pod", "refused exec", named("exec refused")),
    ("Shell Into Pod", "pod created", named("pod mounting a harmless path")),
    ("Pod With Host Access Created", "plain pod", named("pod")),
    ("Pod With Host Access Created", "hostNetwork false", named("pod hostNetwork false")),
    ("Pod With Host Access Created", "plain pod in kube-system", named("pod in kube-system")),
    (
        "Pod With Host Access Created",
        "kube-proxy in kube-system",
        pod_created(
            pod_body(
                container(image="registry.k8s.io/kube-proxy:v1.31.2"),
                namespace="kube-system",
                hostNetwork=True,
            )
        ),
    ),
    ("Pod With Host Access Created", "refused", forbidden("pod privileged")),
    ("Pod With Host Access Created", "sensitive mount only", named("pod mounting /etc")),
    ("Pod Mounting Sensitive Host Path", "no volume", named("pod")),
    (
        "Pod Mounting Sensitive Host Path",
        "harmless host path",
        named("pod mounting a harmless path"),
    ),
    ("Binding To Cluster Admin", "other role", named("binding to another role")),
    ("Binding To Cluster Admin", "deletion", named("binding deleted")),
    ("Binding To Cluster Admin", "refused", forbidden("binding to cluster-admin")),
    ("Role With Wildcard", "explicit verbs", named("clusterrole")),
    ("Role With Wildcard", "write verbs", named("clusterrole with write verbs")),
    ("Role With Wildcard", "pods/exec", named("clusterrole granting pods/exec")),
    ("Role With Wildcard", "by the apiserver", named("clusterrole with wildcard verbs", **SYSTEM)),
    ("Role Granting Pod Exec", "pods only", named("clusterrole")),
    ("Role Granting Pod Exec", "wildcard", named("clusterrole with wildcard resources")),
    ("Secret Read By Unexpected User", "create", named("secret created")),
    (
        "Secret Read By Unexpected User",
        "the kubelet",
        asked("get", "secrets", user=NODE, name="tls"),
    ),
    (
        "Secret Read By Unexpected User",
        "the controller manager",
        asked(
            "list", "secrets", user=("system:kube-controller-manager", ("system:authenticated",))
        ),
    ),
    ("Secret Read By Unexpected User", "refused", forbidden("secret read")),
    (
        "Anonymous Request Allowed",
        "health check",
        Request("system:anonymous", "get", path="/healthz", groups=("system:unauthenticated",)),
    ),
    ("Anonymous Request Allowed", "refused", forbidden("anonymous creates a namespace")),
    ("Anonymous Request Allowed", "a user", named("user creates a namespace")),
    ("ConfigMap With Credentials", "colors", named("configmap of colors")),
    ("ConfigMap With Credentials", "plain", named("configmap")),
    ("ConfigMap With Credentials", "deletion", named("configmap deleted")),
    ("NodePort Service Created", "ClusterIP", named("service ClusterIP")),
    ("NodePort Service Created", "plain service", named("service")),
    ("System ClusterRole Changed", "other clusterrole", named("clusterrole deleted")),
    (
        "System ClusterRole Changed",
        "by the apiserver",
        named("system clusterrole patched", **SYSTEM),
    ),
    (
        "Service Account Token Created",
        "by the kubelet",
        named("token request", user=NODE[0], groups=NODE[1], namespace="default", name="default"),
    ),
    ("Service Account Token Created", "service account", named("serviceaccount")),
    (
        "Service Account Token Created",
        "token Secret by the controller",
        named("token secret by the controller manager"),
    ),
    (
        "Unexpected Namespace Created",
        "expected name",
        named("user creates a namespace", name="kube-node-lease"),
    ),
    ("Unexpected Namespace Created", "deletion", named("namespace deleted")),
]

# Falco's recorded traces (../shared/corpus), each a request its name says: the rule fires on
# every event of the file, or on none.
TRACES_FIRE: list[tuple[str, str]] = [
    ("Shell Into Pod", "exec_pod.json"),
    ("Shell Into Pod", "attach_pod.json"),
    ("Pod With Host Access Created", "create_nginx_pod_hostnetwork.json"),
    ("Pod With Host Access Created", "create_nginx_pod_privileged.json"),
    ("Pod With Host Access Created", "create_nginx_pod_privileged_2nd_container.json"),
    (
        "Pod With Host Access Created",
        "create_nginx_pod_no_secctx_1st_container_privileged_2nd_container.json",
    ),
    ("Pod Mounting Sensitive Host Path", "create_nginx_pod_sensitive_mount.json"),
    ("Pod Mounting Sensitive Host Path", "create_nginx_pod_sensitive_mount_2nd_container.json"),
    ("Binding To Cluster Admin", "attach_cluster_admin_role.json"),
    ("Role With Wildcard", "create_cluster_role_wildcard_verbs.json"),
    ("Role With Wildcard", "create_cluster_role_wildcard_resources.json"),
    ("Role Granting Pod Exec", "create_cluster_role_pod_exec.json"),
    ("Anonymous Request Allowed", "anonymous_creates_namespace_foo.json"),
    ("ConfigMap With Credentials", "create_configmap_sensitive_values.json"),
    ("NodePort Service Created", "create_nginx_service_nodeport.json"),
    ("System ClusterRole Changed", "modify_cluster_role_node_problem_detector.json"),
    ("System ClusterRole Changed", "delete_cluster_role_kube_aggregator.json"),
    ("Unexpected Namespace Created", "minikube_creates_namespace_foo.json"),
    ("Unexpected Namespace Created", "some-user_creates_namespace_foo.json"),
]
TRACES_SILENT: list[tuple[str, str]] = [
    ("Shell Into Pod", "create_nginx_pod_unsensitive_mount.json"),
    ("Pod With Host Access Created", "create_nginx_pod_unprivileged.json"),
    ("Pod With Host Access Created", "create_nginx_pod_nohostnetwork.json"),
    ("Pod With Host Access Created", "create_pod_kube_system_namespace.json"),
    ("Pod With Host Access Created", "create_nginx_pod_sensitive_mount.json"),
    ("Pod Mounting Sensitive Host Path", "create_nginx_pod_unprivileged.json"),
    ("Binding To Cluster Admin", "create_clusterrolebinding.json"),
    ("Binding To Cluster Admin", "delete_clusterrolebinding.json"),
    ("Role With Wildcard", "create_clusterrole.json"),
    ("Role With Wildcard", "create_cluster_role_write_privileges.json"),
    ("Role With Wildcard", "create_cluster_role_pod_exec.json"),
    ("Role Granting Pod Exec", "create_clusterrole.json"),
    ("Role Granting Pod Exec", "create_cluster_role_wildcard_resources.json"),
    ("Secret Read By Unexpected User", "create_secret.json"),
    ("Anonymous Request Allowed", "minikube_creates_namespace_foo.json"),
    ("ConfigMap With Credentials", "create_configmap_no_sensitive_values.json"),
    ("ConfigMap With Credentials", "create_configmap.json"),
    ("ConfigMap With Credentials", "delete_configmap.json"),
    ("NodePort Service Created", "create_nginx_service_nonodeport.json"),
    ("NodePort Service Created", "create_service.json"),
    ("System ClusterRole Changed", "delete_clusterrole.json"),
    ("Service Account Token Created", "create_serviceaccount.json"),
    ("Service Account Token Created", "create_service_account_token_secret.json"),
    ("Unexpected Namespace Created", "delete_namespace_foo.json"),
]


def _ids(cases: list[tuple[str, str, Any]]) -> list[str]:
    return [f"{rule}: {what}" for rule, what, _ in cases]


@pytest.mark.parametrize("policy", [TRACED, SHIPPED], ids=["every request", "shipped policy"])
@pytest.mark.parametrize(("rule", "what", "request_"), FIRES, ids=_ids(FIRES))
def test_rule_fires_once_per_request(
    rule: str, what: str, request_: Request, policy: AuditPolicy
) -> None:
    """Under the shipped policy too: what the policy leaves out of a request (its body below
    level Request, the stages it omits) is never what the rule needs."""
    events = policy.audit(request_)
    assert events, "the policy does not audit this request"
    firing = [
        event["stage"]
        for event, rules in zip(events, fired(default_rules(), events), strict=True)
        if rule in rules
    ]
    assert len(firing) == 1, f"fired on stages {firing} of {[e['stage'] for e in events]}"


@pytest.mark.parametrize(("rule", "what", "request_"), SILENT, ids=_ids(SILENT))
def test_rule_stays_silent(rule: str, what: str, request_: Request) -> None:
    events = TRACED.audit(request_)
    assert events
    for event, rules_fired in zip(events, fired(default_rules(), events), strict=True):
        assert rule not in rules_fired, event["stage"]


def test_every_rule_is_tested_both_ways() -> None:
    assert {rule for rule, _, _ in FIRES} == set(RULES)
    assert {rule for rule, _, _ in SILENT} == set(RULES)


def test_a_stream_alerts_when_it_starts_not_when_it_ends() -> None:
    started, completed = SHIPPED.audit(named("exec"))
    assert (started["stage"], completed["stage"]) == ("ResponseStarted", "ResponseComplete")
    assert fired(default_rules(), [started, completed]) == [{"Shell Into Pod"}, set()]


@pytest.mark.parametrize(("rule", "trace"), TRACES_FIRE, ids=[f"{r}: {t}" for r, t in TRACES_FIRE])
def test_rule_fires_on_falcos_trace(rule: str, trace: str) -> None:
    events = [event for event in corpus_file_events(trace) if event]
    assert events
    for index, rules_fired in enumerate(fired(default_rules(), events)):
        assert rule in rules_fired, f"event {index}: fired {sorted(rules_fired)}"


@pytest.mark.parametrize(
    ("rule", "trace"), TRACES_SILENT, ids=[f"{r}: {t}" for r, t in TRACES_SILENT]
)
def test_rule_stays_silent_on_falcos_trace(rule: str, trace: str) -> None:
    events = [event for event in corpus_file_events(trace) if event]
    assert events
    for index, rules_fired in enumerate(fired(default_rules(), events)):
        assert rule not in rules_fired, f"event {index}"


def test_every_rule_is_complete_and_of_the_k8s_audit_source() -> None:
    items = yaml.safe_load(DEFAULT_RULES.read_text())
    rules = [item for item in items if "rule" in item]
    assert [rule["rule"] for rule in rules] == list(RULES)
    for rule in rules:
        missing = {"desc", "condition", "output", "priority", "tags"} - rule.keys()
        assert not missing, f"{rule['rule']}: no {sorted(missing)}"
        assert rule["source"] == "k8s_audit", rule["rule"]
        assert "k8s" in rule["tags"] and any(tag.startswith("MITRE_") for tag in rule["tags"])
        assert "%ka.user.name" in rule["output"], rule["rule"]
    [plugins] = [
        item["required_plugin_versions"] for item in items if "required_plugin_versions" in item
    ]
    assert [plugin["name"] for plugin in plugins] == ["k8saudit"]


def test_an_operator_extends_an_allow_list_with_a_second_file(tmp_path: Path) -> None:
    extra = tmp_path / "local.yaml"
    extra.write_text("- list: expected_namespaces\n  items: [foo]\n  append: true\n")
    events = TRACED.audit(named("another user creates a namespace"))
    assert "Unexpected Namespace Created" in fired(default_rules(), events)[0]
    assert (
        "Unexpected Namespace Created" not in fired(load_rules([DEFAULT_RULES, extra]), events)[0]
    )


def test_every_alert_names_who_and_what() -> None:
    [event] = SHIPPED.audit(named("binding to cluster-admin"))
    [alert] = default_rules().evaluate(event)
    assert alert.rule == "Binding To Cluster Admin"
    assert alert.source == "k8s_audit"
    assert alert.priority.label == "Warning"
    assert f"{ADMIN[0]} create binding clusterrolebindings some-reader-binding" in alert.output
    assert "cluster-admin" in alert.output


def test_alerts_under_the_shipped_policy_name_what_they_report() -> None:
    [created] = SHIPPED.audit(named("pod privileged"))
    [alert] = default_rules().evaluate(created)
    assert "minikube-user create pod default/nginx with host access" in alert.output
    [token] = SHIPPED.audit(named("token request"))
    [alert] = default_rules().evaluate(token)
    assert 'audiences=["vault"] expiration=3600' in alert.output


def test_on_the_samples_every_exec_alerts_once_as_it_starts() -> None:
    events = sample_events(1000)
    execs = [e["auditID"] for e in events if e["objectRef"].get("subresource") == "exec"]
    assert len(execs) == 2 * len(set(execs)) - (execs.count(execs[-1]) == 1)  # last may be cut
    alerts = [
        (event["auditID"], event["stage"])
        for event in events
        for alert in default_rules().evaluate(event)
        if alert.rule == "Shell Into Pod"
    ]
    assert sorted(alerts) == sorted((audit_id, "ResponseStarted") for audit_id in set(execs))


def test_the_samples_hold_what_the_shipped_policy_writes() -> None:
    """Every level and stage the policy gives the requests of tests.support.events is among
    the samples', and the rules that read request bodies fire on them."""
    events = sample_events(1000)
    shipped = {(e["level"], e["stage"]) for r in REQUESTS.values() for e in SHIPPED.audit(r)}
    assert shipped <= {(event["level"], event["stage"]) for event in events}
    fired_on_samples = {alert.rule for event in events for alert in default_rules().evaluate(event)}
    assert {"Shell Into Pod", "ConfigMap With Credentials", "Pod With Host Access Created"} <= (
        fired_on_samples
    )
