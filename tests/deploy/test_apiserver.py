"""deploy/apiserver: the audit policy decides as documented, and the files agree with each other.

The policy is evaluated with kube-apiserver's own rule semantics (tests.support.audit_policy),
so the claims in its comments are checked against requests, not just read.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from tests.deploy.conftest import DEPLOY, load_yaml_documents, render
from tests.support.audit_policy import AuditPolicy, Request
from tests.support.events import REQUESTS

APISERVER = DEPLOY / "apiserver"
LEVELS = ("None", "Metadata", "Request", "RequestResponse")
RULE_FIELDS = {
    "level",
    "users",
    "userGroups",
    "verbs",
    "resources",
    "namespaces",
    "nonResourceURLs",
    "omitStages",
    "omitManagedFields",
}


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    (document,) = load_yaml_documents(APISERVER / "audit-policy.yaml")
    return document


def level_for(policy: dict[str, Any], request: Request) -> str:
    return AuditPolicy(policy).decide(request).level


def test_policy_is_a_well_formed_v1_policy(policy: dict[str, Any]) -> None:
    assert (policy["apiVersion"], policy["kind"]) == ("audit.k8s.io/v1", "Policy")
    assert policy["omitStages"] == ["RequestReceived"]
    assert policy["omitManagedFields"] is True
    for rule in policy["rules"]:
        assert set(rule) <= RULE_FIELDS, rule
        assert rule["level"] in LEVELS
        for entry in rule.get("resources", []):
            assert set(entry) <= {"group", "resources", "resourceNames"}, entry
    # The last rule catches everything, so nothing is silently unaudited.
    assert set(policy["rules"][-1]) == {"level"}


JANE = "jane@example.com"
KUBELET = Request(user="system:node:n1", groups=("system:nodes",), verb="get")


@pytest.mark.parametrize(
    ("request_", "level"),
    [
        # Sensitive objects: who and when, never the values, whatever the verb.
        (Request(JANE, "get", "secrets", namespace="default"), "Metadata"),
        (Request(JANE, "create", "secrets", namespace="default"), "Metadata"),
        (Request(JANE, "patch", "secrets", namespace="default"), "Metadata"),
        (Request(JANE, "list", "secrets"), "Metadata"),
        (Request(JANE, "get", "configmaps", namespace="default"), "Metadata"),
        (Request(JANE, "delete", "configmaps", namespace="default"), "Metadata"),
        (Request(JANE, "create", "tokenreviews", group="authentication.k8s.io"), "Metadata"),
        (Request(JANE, "get", "serviceaccounts/token", namespace="ci"), "Metadata"),
        # What the default rules read: a ConfigMap's new data, a TokenRequest's audiences.
        (Request(JANE, "update", "configmaps", namespace="default"), "Request"),
        (Request(JANE, "patch", "configmaps", namespace="default"), "Request"),
        (Request(JANE, "create", "serviceaccounts/token", namespace="ci"), "Request"),
        (Request(JANE, "create", "pods/exec", namespace="default"), "Metadata"),
        # Changes keep the request body; reads are metadata.
        (Request(JANE, "create", "deployments", group="apps", namespace="web"), "Request"),
        (
            Request(JANE, "delete", "clusterrolebindings", group="rbac.authorization.k8s.io"),
            "Request",
        ),
        (Request(JANE, "get", "pods", namespace="web"), "Metadata"),
        (Request(JANE, "create", "leases", group="coordination.k8s.io", namespace="x"), "Request"),
        # Noise.
        (Request(JANE, "get", path="/healthz"), "None"),
        (Request(JANE, "get", path="/readyz/etcd"), "None"),
        (Request(JANE, "get", path="/apis/apps/v1"), "None"),
        (Request("system:node:n1", "update", "leases", group="coordination.k8s.io"), "None"),
        (Request(JANE, "create", "events", namespace="web"), "None"),
        (Request(KUBELET.user, "get", "secrets", groups=KUBELET.groups), "None"),
        (Request(KUBELET.user, "patch", "nodes/status", groups=KUBELET.groups), "None"),
        (Request("system:kube-scheduler", "watch", "pods"), "None"),
        (
            Request(
                "system:serviceaccount:kube-system:coredns",
                "list",
                "services",
                groups=("system:serviceaccounts", "system:serviceaccounts:kube-system"),
            ),
            "None",
        ),
        # The control plane's changes to workloads are still recorded.
        (Request("system:kube-controller-manager", "create", "pods", namespace="web"), "Request"),
        (Request("system:kube-controller-manager", "update", "endpoints"), "None"),
    ],
)
def test_policy_decides_as_documented(
    policy: dict[str, Any], request_: Request, level: str
) -> None:
    assert level_for(policy, request_) == level


def test_no_rule_records_secret_contents(policy: dict[str, Any]) -> None:
    """Secrets and TokenReviews never above Metadata; ConfigMaps and TokenRequests never with
    their response (a TokenRequest's holds the token); ConfigMap reads at Metadata."""
    capped = {
        ("secrets", ""): "Metadata",
        ("tokenreviews", "authentication.k8s.io"): "Metadata",
        ("configmaps", ""): "Request",
        ("serviceaccounts/token", ""): "Request",
    }
    for (resource, group), highest in capped.items():
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
            for user, groups in ((JANE, ("system:authenticated",)), ("admin", ("system:masters",))):
                request = Request(user, verb, resource, group=group, groups=groups)
                level = level_for(policy, request)
                assert LEVELS.index(level) <= LEVELS.index(highest), request
                if verb in ("get", "list", "watch"):
                    assert level in ("None", "Metadata"), request


def shape(events: list[dict[str, Any]]) -> list[tuple[str, str, bool, bool]]:
    return [(e["level"], e["stage"], "requestObject" in e, "responseObject" in e) for e in events]


def test_what_the_policy_writes_for_a_request(policy: dict[str, Any]) -> None:
    """The events tests take as the apiserver's (tests.support.audit_policy): stages by the
    request's kind less the omitted ones, bodies by level."""
    shipped = AuditPolicy(policy)
    # A stream: its start and its end, no body.
    assert shape(shipped.audit(REQUESTS["exec"])) == [
        ("Metadata", "ResponseStarted", False, False),
        ("Metadata", "ResponseComplete", False, False),
    ]
    assert shape(shipped.audit(REQUESTS["configmap with credentials"])) == [
        ("Request", "ResponseComplete", True, False)
    ]
    assert shape(shipped.audit(REQUESTS["secret created"])) == [
        ("Metadata", "ResponseComplete", False, False)
    ]
    renewal = dataclasses.replace(KUBELET, verb="update", resource="leases")
    assert shipped.audit(dataclasses.replace(renewal, group="coordination.k8s.io")) == []
    # Without omitStages: RequestReceived first, before any answer or body.
    everything = AuditPolicy({"rules": [{"level": "RequestResponse", "omitManagedFields": True}]})
    managed = {**REQUESTS["pod"].body, "metadata": {"name": "nginx", "managedFields": [{}]}}
    received, done = everything.audit(dataclasses.replace(REQUESTS["pod"], body=managed))
    assert shape([received, done]) == [
        ("RequestResponse", "RequestReceived", False, False),
        ("RequestResponse", "ResponseComplete", True, True),
    ]
    assert "responseStatus" not in received and done["responseStatus"]["code"] == 201
    assert done["requestObject"]["metadata"] == {"name": "nginx"}
    refused = dataclasses.replace(REQUESTS["pod"], allowed=False, code=403)
    [_, forbidden] = everything.audit(refused)
    assert "requestObject" not in forbidden
    assert forbidden["annotations"]["authorization.k8s.io/decision"] == "forbid"


@pytest.fixture(scope="module")
def webhook_kubeconfig() -> dict[str, Any]:
    (document,) = load_yaml_documents(APISERVER / "audit-webhook-kubeconfig.yaml")
    return document


@pytest.fixture(scope="module")
def cluster_configuration() -> dict[str, Any]:
    (document,) = load_yaml_documents(APISERVER / "kubeadm-cluster-configuration.yaml")
    return document


def test_webhook_kubeconfig_reaches_the_relay_over_https_with_a_token(
    webhook_kubeconfig: dict[str, Any],
) -> None:
    config = webhook_kubeconfig
    assert (config["apiVersion"], config["kind"]) == ("v1", "Config")
    (context,) = [
        c["context"] for c in config["contexts"] if c["name"] == config["current-context"]
    ]
    (cluster,) = [c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"]]
    (user,) = [u["user"] for u in config["users"] if u["name"] == context["user"]]

    objects = render(".")
    (service,) = [
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "audit-relay"
    ]
    (config_map,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("audit-relay-config")
    ]
    (port,) = service["spec"]["ports"]
    match = re.fullmatch(r"https://RELAY_CLUSTER_IP:(\d+)(/.*)", cluster["server"])
    assert match, cluster["server"]
    assert int(match.group(1)) == port["port"]
    assert match.group(2) == config_map["data"]["AUDIT_RELAY_PATH"]
    metadata = service["metadata"]
    assert cluster["tls-server-name"] == f"{metadata['name']}.{metadata['namespace']}.svc"
    assert not cluster.get("insecure-skip-tls-verify")
    assert set(user) == {"tokenFile"}
    assert cluster["certificate-authority"].startswith("/etc/kubernetes/audit/")
    assert user["tokenFile"].startswith("/etc/kubernetes/audit/")


def readme_flags() -> dict[str, str]:
    text = (APISERVER / "README.md").read_text()
    return dict(re.findall(r"^\s*- --(audit-[a-z-]+)=(\S+)$", text, flags=re.MULTILINE))


def test_readme_kubeadm_configuration_and_kubeconfig_agree(
    cluster_configuration: dict[str, Any], webhook_kubeconfig: dict[str, Any]
) -> None:
    api_server = cluster_configuration["apiServer"]
    extra_args = {arg["name"]: arg["value"] for arg in api_server["extraArgs"]}
    assert readme_flags() == extra_args
    assert {"audit-policy-file", "audit-webhook-config-file", "audit-webhook-mode"} <= set(
        extra_args
    )
    assert extra_args["audit-webhook-mode"] == "batch"

    (volume,) = api_server["extraVolumes"]
    assert volume["readOnly"] is True and volume["hostPath"] == volume["mountPath"]
    (cluster,) = webhook_kubeconfig["clusters"]
    (user,) = webhook_kubeconfig["users"]
    mounted = [
        extra_args["audit-policy-file"],
        extra_args["audit-webhook-config-file"],
        cluster["cluster"]["certificate-authority"],
        user["user"]["tokenFile"],
    ]
    assert all(path.startswith(volume["mountPath"] + "/") for path in mounted), mounted
    readme = (APISERVER / "README.md").read_text()
    for path in mounted:
        assert path in readme, f"README does not say where {path} comes from"
