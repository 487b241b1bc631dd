"""The shipped default rules: each fires on the requests it is about, and on no others."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumers.rules.ruleset import DEFAULT_RULES, RuleSet, load_rules
from tests.support.corpus import corpus_file_events

Event = dict[str, Any]

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


@cache
def default_rules() -> RuleSet:
    return load_rules([DEFAULT_RULES])


def fired(rules: RuleSet, events: list[Event]) -> list[set[str]]:
    return [{alert.rule for alert in rules.evaluate(event)} for event in events]


def request(
    verb: str,
    resource: str,
    *,
    user: str = "alice@example.com",
    groups: tuple[str, ...] = ("system:authenticated",),
    namespace: str | None = "default",
    name: str | None = None,
    subresource: str | None = None,
    stage: str = "ResponseComplete",
    code: int = 200,
    decision: str = "allow",
    uri: str | None = None,
    request_object: dict[str, Any] | None = None,
) -> Event:
    """One audit event as kube-apiserver logs it at level Request."""
    object_ref: dict[str, Any] = {"resource": resource, "apiVersion": "v1"}
    path = f"/api/v1/{resource}"
    if namespace:
        object_ref["namespace"] = namespace
        path = f"/api/v1/namespaces/{namespace}/{resource}"
    if name:
        object_ref["name"] = name
        path += f"/{name}"
    if subresource:
        object_ref["subresource"] = subresource
        path += f"/{subresource}"
    event: Event = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Request",
        "auditID": "5a6f4c52-93f1-4c0b-9c55-b0b6c0e1f6a1",
        "stage": stage,
        "requestURI": uri or path,
        "verb": verb,
        "user": {"username": user, "groups": list(groups)},
        "sourceIPs": ["10.0.0.7"],
        "userAgent": "kubectl/v1.31.2",
        "objectRef": object_ref,
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": "2026-12-01T10:00:00.000000Z",
        "stageTimestamp": "2026-12-01T10:00:00.020000Z",
        "annotations": {"authorization.k8s.io/decision": decision},
    }
    if request_object is not None:
        event["requestObject"] = request_object
    return event


def pod(
    *,
    namespace: str = "default",
    image: str = "nginx:1.27",
    host_paths: tuple[str, ...] = (),
    **spec: Any,
) -> Event:
    volumes = [
        {"name": f"host-{index}", "hostPath": {"path": path}}
        for index, path in enumerate(host_paths)
    ]
    body = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"containers": [{"name": "web", "image": image}], "volumes": volumes, **spec},
    }
    return request("create", "pods", namespace=namespace, code=201, request_object=body)


def with_changes(events: list[Event], **changes: Any) -> list[Event]:
    """Copies of ``events`` with top-level fields replaced (``user``, ``stage``...)."""
    changed = [copy.deepcopy(event) for event in events]
    for event in changed:
        event.update(copy.deepcopy(changes))
    return changed


def corpus(name: str) -> Callable[[], list[Event]]:
    return lambda: [event for event in corpus_file_events(name) if event]


def made(*events: Event) -> Callable[[], list[Event]]:
    return lambda: list(events)


def forbidden(name: str) -> Callable[[], list[Event]]:
    def events() -> list[Event]:
        refused = copy.deepcopy(corpus(name)())
        for event in refused:
            event["annotations"]["authorization.k8s.io/decision"] = "forbid"
            event["responseStatus"]["code"] = 403
        return refused

    return events


SYSTEM = {"user": {"username": "system:apiserver", "groups": ["system:masters"]}}
NODE = ("system:node:node-1", ("system:nodes", "system:authenticated"))

FIRES: list[tuple[str, str, Callable[[], list[Event]]]] = [
    ("Shell Into Pod", "exec", corpus("exec_pod.json")),
    ("Shell Into Pod", "attach", corpus("attach_pod.json")),
    ("Pod With Host Access Created", "hostNetwork", corpus("create_nginx_pod_hostnetwork.json")),
    ("Pod With Host Access Created", "privileged", corpus("create_nginx_pod_privileged.json")),
    (
        "Pod With Host Access Created",
        "privileged 2nd container",
        corpus("create_nginx_pod_privileged_2nd_container.json"),
    ),
    (
        "Pod With Host Access Created",
        "2nd container privileged, 1st without securityContext",
        corpus("create_nginx_pod_no_secctx_1st_container_privileged_2nd_container.json"),
    ),
    ("Pod With Host Access Created", "hostPID", made(pod(hostPID=True))),
    ("Pod With Host Access Created", "hostIPC", made(pod(hostIPC=True))),
    (
        "Pod With Host Access Created",
        "allow-listed image outside kube-system",
        made(pod(image="registry.k8s.io/kube-proxy:v1.31.2", hostNetwork=True)),
    ),
    ("Pod Mounting Sensitive Host Path", "/etc", corpus("create_nginx_pod_sensitive_mount.json")),
    (
        "Pod Mounting Sensitive Host Path",
        "/etc, 2 containers",
        corpus("create_nginx_pod_sensitive_mount_2nd_container.json"),
    ),
    (
        "Pod Mounting Sensitive Host Path",
        "docker socket",
        made(pod(host_paths=("/tmp/cache", "/var/run/docker.sock"))),
    ),
    ("Binding To Cluster Admin", "clusterrolebinding", corpus("attach_cluster_admin_role.json")),
    ("Role With Wildcard", "verbs", corpus("create_cluster_role_wildcard_verbs.json")),
    ("Role With Wildcard", "resources", corpus("create_cluster_role_wildcard_resources.json")),
    ("Role Granting Pod Exec", "pods/exec", corpus("create_cluster_role_pod_exec.json")),
    (
        "Secret Read By Unexpected User",
        "get",
        made(request("get", "secrets", name="db-password")),
    ),
    (
        "Secret Read By Unexpected User",
        "list by a service account",
        made(request("list", "secrets", user="system:serviceaccount:ci:deployer")),
    ),
    ("Anonymous Request Allowed", "create", corpus("anonymous_creates_namespace_foo.json")),
    (
        "Anonymous Request Allowed",
        "unauthenticated group",
        made(
            request(
                "list",
                "pods",
                user="system:anonymous",
                groups=("system:unauthenticated",),
            )
        ),
    ),
    (
        "ConfigMap With Credentials",
        "aws keys, password, passphrase",
        corpus("create_configmap_sensitive_values.json"),
    ),
    (
        "ConfigMap With Credentials",
        "private key",
        made(
            request(
                "update",
                "configmaps",
                name="tls",
                request_object={
                    "kind": "ConfigMap",
                    "data": {"key.pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIE..."},
                },
            )
        ),
    ),
    ("NodePort Service Created", "create", corpus("create_nginx_service_nodeport.json")),
    (
        "System ClusterRole Changed",
        "patch",
        corpus("modify_cluster_role_node_problem_detector.json"),
    ),
    ("System ClusterRole Changed", "delete", corpus("delete_cluster_role_kube_aggregator.json")),
    (
        "Service Account Token Created",
        "TokenRequest by a person",
        made(
            request(
                "create",
                "serviceaccounts",
                name="deployer",
                subresource="token",
                code=201,
                request_object={"kind": "TokenRequest", "spec": {"audiences": ["vault"]}},
            )
        ),
    ),
    ("Unexpected Namespace Created", "by a user", corpus("minikube_creates_namespace_foo.json")),
    ("Unexpected Namespace Created", "other user", corpus("some-user_creates_namespace_foo.json")),
]

SILENT: list[tuple[str, str, Callable[[], list[Event]]]] = [
    ("Shell Into Pod", "refused exec", forbidden("exec_pod.json")),
    (
        "Shell Into Pod",
        "the exec's completion (alerted at its start)",
        lambda: with_changes(corpus("exec_pod.json")(), stage="ResponseComplete"),
    ),
    ("Shell Into Pod", "pod read", corpus("create_nginx_pod_unsensitive_mount.json")),
    ("Pod With Host Access Created", "plain pod", corpus("create_nginx_pod_unprivileged.json")),
    (
        "Pod With Host Access Created",
        "hostNetwork false",
        corpus("create_nginx_pod_nohostnetwork.json"),
    ),
    (
        "Pod With Host Access Created",
        "plain pod in kube-system",
        corpus("create_pod_kube_system_namespace.json"),
    ),
    (
        "Pod With Host Access Created",
        "kube-proxy in kube-system",
        made(
            pod(
                namespace="kube-system",
                image="registry.k8s.io/kube-proxy:v1.31.2",
                hostNetwork=True,
            )
        ),
    ),
    ("Pod With Host Access Created", "refused", forbidden("create_nginx_pod_privileged.json")),
    (
        "Pod With Host Access Created",
        "sensitive mount only",
        corpus("create_nginx_pod_sensitive_mount.json"),
    ),
    ("Pod Mounting Sensitive Host Path", "no volume", corpus("create_nginx_pod_unprivileged.json")),
    (
        "Pod Mounting Sensitive Host Path",
        "harmless host path",
        made(pod(host_paths=("/tmp/cache", "/var/log/app"))),
    ),
    ("Binding To Cluster Admin", "other role", corpus("create_clusterrolebinding.json")),
    ("Binding To Cluster Admin", "deletion", corpus("delete_clusterrolebinding.json")),
    ("Binding To Cluster Admin", "refused", forbidden("attach_cluster_admin_role.json")),
    ("Role With Wildcard", "explicit verbs", corpus("create_clusterrole.json")),
    ("Role With Wildcard", "write verbs", corpus("create_cluster_role_write_privileges.json")),
    ("Role With Wildcard", "pods/exec", corpus("create_cluster_role_pod_exec.json")),
    (
        "Role With Wildcard",
        "by the apiserver",
        lambda: with_changes(corpus("create_cluster_role_wildcard_verbs.json")(), **SYSTEM),
    ),
    ("Role Granting Pod Exec", "pods only", corpus("create_clusterrole.json")),
    ("Role Granting Pod Exec", "wildcard", corpus("create_cluster_role_wildcard_resources.json")),
    ("Secret Read By Unexpected User", "create", corpus("create_secret.json")),
    (
        "Secret Read By Unexpected User",
        "the kubelet",
        made(request("get", "secrets", name="tls", user=NODE[0], groups=NODE[1])),
    ),
    (
        "Secret Read By Unexpected User",
        "the controller manager",
        made(request("list", "secrets", user="system:kube-controller-manager")),
    ),
    (
        "Secret Read By Unexpected User",
        "refused",
        made(request("get", "secrets", name="db", code=403, decision="forbid")),
    ),
    (
        "Anonymous Request Allowed",
        "health check",
        made(request("get", "healthz", user="system:anonymous", namespace=None, uri="/healthz")),
    ),
    (
        "Anonymous Request Allowed",
        "refused",
        forbidden("anonymous_creates_namespace_foo.json"),
    ),
    ("Anonymous Request Allowed", "a user", corpus("minikube_creates_namespace_foo.json")),
    ("ConfigMap With Credentials", "colors", corpus("create_configmap_no_sensitive_values.json")),
    ("ConfigMap With Credentials", "plain", corpus("create_configmap.json")),
    ("ConfigMap With Credentials", "deletion", corpus("delete_configmap.json")),
    ("NodePort Service Created", "ClusterIP", corpus("create_nginx_service_nonodeport.json")),
    ("NodePort Service Created", "plain service", corpus("create_service.json")),
    ("System ClusterRole Changed", "other clusterrole", corpus("delete_clusterrole.json")),
    (
        "System ClusterRole Changed",
        "by the apiserver",
        lambda: with_changes(corpus("modify_cluster_role_node_problem_detector.json")(), **SYSTEM),
    ),
    (
        "Service Account Token Created",
        "by the kubelet",
        made(
            request(
                "create",
                "serviceaccounts",
                name="default",
                subresource="token",
                code=201,
                user=NODE[0],
                groups=NODE[1],
            )
        ),
    ),
    ("Service Account Token Created", "service account", corpus("create_serviceaccount.json")),
    (
        "Service Account Token Created",
        "token Secret by the controller",
        corpus("create_service_account_token_secret.json"),
    ),
    (
        "Unexpected Namespace Created",
        "expected name",
        made(request("create", "namespaces", namespace=None, name="kube-node-lease", code=201)),
    ),
    ("Unexpected Namespace Created", "deletion", corpus("delete_namespace_foo.json")),
]


def _ids(cases: list[tuple[str, str, Any]]) -> list[str]:
    return [f"{rule}: {what}" for rule, what, _ in cases]


@pytest.mark.parametrize(("rule", "what", "events"), FIRES, ids=_ids(FIRES))
def test_rule_fires(rule: str, what: str, events: Callable[[], list[Event]]) -> None:
    given = events()
    assert given
    for index, rules_fired in enumerate(fired(default_rules(), given)):
        assert rule in rules_fired, f"event {index}: fired {sorted(rules_fired)}"


@pytest.mark.parametrize(("rule", "what", "events"), SILENT, ids=_ids(SILENT))
def test_rule_stays_silent(rule: str, what: str, events: Callable[[], list[Event]]) -> None:
    given = events()
    assert given
    for index, rules_fired in enumerate(fired(default_rules(), given)):
        assert rule not in rules_fired, f"event {index}"


def test_every_rule_is_tested_both_ways() -> None:
    assert {rule for rule, _, _ in FIRES} == set(RULES)
    assert {rule for rule, _, _ in SILENT} == set(RULES)


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
    events = corpus("some-user_creates_namespace_foo.json")()
    assert "Unexpected Namespace Created" in fired(default_rules(), events)[0]
    assert (
        "Unexpected Namespace Created" not in fired(load_rules([DEFAULT_RULES, extra]), events)[0]
    )


def test_every_alert_names_who_and_what() -> None:
    [event] = corpus("attach_cluster_admin_role.json")()
    [alert] = default_rules().evaluate(event)
    assert alert.rule == "Binding To Cluster Admin"
    assert alert.source == "k8s_audit"
    assert alert.priority.label == "Warning"
    assert "minikube-user create binding clusterrolebindings some-reader-binding" in alert.output
    assert "cluster-admin" in alert.output
