"""GKE's audit entries rebuilt into audit.k8s.io/v1 Events (pure logic): entries written as GKE
writes them (Cloud Logging LogEntry JSON, as a sink publishes it), every rebuilt field asserted."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from relay.sources.gke_audit import message_item, rebuild

CLUSTER = {"project_id": "acme-prod", "location": "europe-west1", "cluster_name": "prod-eu"}
ALLOW = {
    "authorization.k8s.io/decision": "allow",
    "authorization.k8s.io/reason": "access granted by IAM permissions.",
}


def entry(payload: dict[str, Any], *, log: str = "activity", **fields: Any) -> dict[str, Any]:
    """A LogEntry as GKE writes a Kubernetes audit entry, around ``payload``'s AuditLog fields."""
    audit_id = fields.pop("audit_id", "6f1c6a3e-5d1e-4f0b-9a43-1b2f0f6e2a11")
    return {
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "authenticationInfo": {"principalEmail": "alice@acme.example"},
            "requestMetadata": {
                "callerIp": "203.0.113.7",
                "callerSuppliedUserAgent": "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46",
            },
            "serviceName": "k8s.io",
            "status": {},
            **payload,
        },
        "insertId": "a3f9e1c2-77b4-4c1e-8f3e-5d2b9c0e4f11",
        "resource": {"type": "k8s_cluster", "labels": CLUSTER},
        "timestamp": "2026-12-07T10:15:30.123456Z",
        "severity": "NOTICE",
        "labels": fields.pop("labels", ALLOW),
        "logName": f"projects/acme-prod/logs/cloudaudit.googleapis.com%2F{log}",
        "operation": {"id": audit_id, "producer": "k8s.io", "first": True, "last": True},
        "receiveTimestamp": "2026-12-07T10:15:31.456789012Z",
        **fields,
    }


def rebuilt(value: dict[str, Any]) -> dict[str, Any]:
    """The Event ``message_item`` gives for the entry as published (JSON bytes)."""
    item = message_item(orjson.dumps(value))
    assert item is not None and item.startswith(b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",')
    return orjson.loads(item)


COMMON = {
    "user": {"username": "alice@acme.example"},
    "sourceIPs": ["203.0.113.7"],
    "userAgent": "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46",
}
TIMES = {
    "requestReceivedTimestamp": "2026-12-07T10:15:30.123456Z",
    "stageTimestamp": "2026-12-07T10:15:31.456789Z",
}
ANNOTATIONS = {**ALLOW, "audit-relay/gke-cluster": "acme-prod/europe-west1/prod-eu"}


def test_pod_create_with_request_and_response_objects() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"}}
    created = {**pod, "metadata": {**pod["metadata"], "uid": "u-1"}, "status": {"phase": "Pending"}}
    value = entry({
        "methodName": "io.k8s.core.v1.pods.create",
        "resourceName": "core/v1/namespaces/shop/pods/web",
        "authorizationInfo": [{"granted": True, "permission": "io.k8s.core.v1.pods.create",
                               "resource": "core/v1/namespaces/shop/pods/web"}],
        "request": {"@type": "core.k8s.io/v1.Pod", **pod},
        "response": {"@type": "core.k8s.io/v1.Pod", **created},
    })  # fmt: skip
    assert list(rebuilt(value).items()) == list({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
        "auditID": "6f1c6a3e-5d1e-4f0b-9a43-1b2f0f6e2a11", "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/shop/pods/web", "verb": "create", **COMMON,
        "objectRef": {"resource": "pods", "namespace": "shop", "name": "web", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 201},
        "requestObject": pod, "responseObject": created, **TIMES, "annotations": ANNOTATIONS,
    }.items())  # fmt: skip


def test_secret_get_at_metadata_level_from_data_access() -> None:
    value = entry(
        {"methodName": "io.k8s.core.v1.secrets.get",
         "resourceName": "core/v1/namespaces/payments/secrets/db-password"},
        log="data_access",
    )  # fmt: skip
    assert rebuilt(value) == {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": "6f1c6a3e-5d1e-4f0b-9a43-1b2f0f6e2a11", "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/payments/secrets/db-password", "verb": "get", **COMMON,
        "objectRef": {"resource": "secrets", "namespace": "payments", "name": "db-password",
                      "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200}, **TIMES, "annotations": ANNOTATIONS,
    }  # fmt: skip


def test_watch_of_a_collection_in_another_group() -> None:
    value = entry(
        {"methodName": "io.k8s.apps.v1.deployments.watch",
         "resourceName": "apps/v1/namespaces/shop/deployments"},
        log="data_access",
    )  # fmt: skip
    event = rebuilt(value)
    assert event["verb"] == "watch"
    assert event["requestURI"] == "/apis/apps/v1/namespaces/shop/deployments?watch=true"
    assert event["objectRef"] == {
        "resource": "deployments", "namespace": "shop", "apiGroup": "apps", "apiVersion": "v1",
    }  # fmt: skip
    assert event["responseStatus"] == {"metadata": {}, "code": 200}
    assert event["level"] == "Metadata" and event["stage"] == "ResponseComplete"


def test_denied_request_status_code_7_is_403_forbidden() -> None:
    denied = {"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": ""}
    value = entry(
        {"methodName": "io.k8s.authorization.rbac.v1.clusterrolebindings.create",
         "resourceName": "rbac.authorization.k8s.io/v1/clusterrolebindings/escalate",
         "authenticationInfo": {"principalEmail": "system:serviceaccount:ci:deployer"},
         "status": {"code": 7, "message": "PERMISSION_DENIED"}},
        labels=denied,
    )  # fmt: skip
    event = rebuilt(value)
    assert event["responseStatus"] == {
        "metadata": {}, "status": "Failure", "message": "PERMISSION_DENIED", "reason": "Forbidden",
        "code": 403,
    }  # fmt: skip
    assert event["objectRef"] == {
        "resource": "clusterrolebindings", "name": "escalate",
        "apiGroup": "rbac.authorization.k8s.io", "apiVersion": "v1",
    }  # fmt: skip
    assert event["requestURI"] == "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/escalate"
    assert event["user"] == {"username": "system:serviceaccount:ci:deployer"}
    assert event["annotations"] == {
        **denied,
        "audit-relay/gke-cluster": ANNOTATIONS["audit-relay/gke-cluster"],
    }
    assert event["verb"] == "create" and "requestObject" not in event


def test_exec_is_a_create_of_the_exec_subresource() -> None:
    value = entry({
        "methodName": "io.k8s.core.v1.pods.exec.create",
        "resourceName": "core/v1/namespaces/shop/pods/web/exec",
    })  # fmt: skip
    event = rebuilt(value)
    assert event["verb"] == "create"
    assert event["requestURI"] == "/api/v1/namespaces/shop/pods/web/exec"
    assert event["objectRef"] == {
        "resource": "pods", "namespace": "shop", "name": "web", "apiVersion": "v1",
        "subresource": "exec",
    }  # fmt: skip
    assert event["responseStatus"] == {"metadata": {}, "code": 101}


@pytest.mark.parametrize(
    ("method", "resource_name", "expected"),
    [
        # A namespace's own subresource, told from "the pods in namespace NS" by methodName.
        ("io.k8s.core.v1.namespaces.finalize.update", "core/v1/namespaces/shop/finalize",
         {"resource": "namespaces", "name": "shop", "apiVersion": "v1", "subresource": "finalize"}),
        ("io.k8s.core.v1.namespaces.delete", "core/v1/namespaces/shop",
         {"resource": "namespaces", "name": "shop", "apiVersion": "v1"}),
        ("io.k8s.core.v1.nodes.list", "core/v1/nodes", {"resource": "nodes", "apiVersion": "v1"}),
        ("io.k8s.apps.v1.deployments.scale.patch", "apps/v1/namespaces/shop/deployments/api/scale",
         {"resource": "deployments", "namespace": "shop", "name": "api", "apiGroup": "apps",
          "apiVersion": "v1", "subresource": "scale"}),
        ("io.k8s.core.v1.configmaps.deletecollection", "core/v1/namespaces/shop/configmaps",
         {"resource": "configmaps", "namespace": "shop", "apiVersion": "v1"}),
    ],
)  # fmt: skip
def test_object_ref_from_resource_name_and_method(
    method: str, resource_name: str, expected: dict[str, str]
) -> None:
    event = rebuilt(entry({"methodName": method, "resourceName": resource_name}))
    assert event["objectRef"] == expected
    assert event["verb"] == method.rsplit(".", 1)[1]


def test_audit_id_falls_back_to_insert_id_and_timestamp_to_receive_time() -> None:
    value = entry(
        {"methodName": "io.k8s.core.v1.pods.get", "resourceName": "core/v1/namespaces/a/pods/b"}
    )
    del value["operation"], value["receiveTimestamp"], value["labels"]
    value["timestamp"] = "2026-12-07T10:15:30Z"
    event = rebuild(value)
    assert event["auditID"] == "a3f9e1c2-77b4-4c1e-8f3e-5d2b9c0e4f11"
    assert (
        event["requestReceivedTimestamp"]
        == event["stageTimestamp"]
        == "2026-12-07T10:15:30.000000Z"
    )
    assert event["annotations"] == {"audit-relay/gke-cluster": "acme-prod/europe-west1/prod-eu"}


def test_other_entries_skipped_and_what_is_no_log_entry_kept_as_it_is() -> None:
    gce = entry(
        {
            "methodName": "v1.compute.instances.start",
            "serviceName": "compute.googleapis.com",
            "resourceName": "projects/acme-prod/zones/europe-west1-b/instances/vm-1",
        }
    )
    gce["resource"] = {"type": "gce_instance", "labels": {"instance_id": "1"}}
    container = {
        "logName": "projects/acme-prod/logs/stdout",
        "textPayload": "GET / 200",
        "resource": {"type": "k8s_container"},
        "timestamp": "2026-12-07T10:15:30Z",
    }
    assert message_item(orjson.dumps(gce)) is None
    assert message_item(orjson.dumps(container)) is None
    # Not JSON, JSON that is no LogEntry, an audit entry without its methodName or with a
    # malformed time: passed as they are, for the runner to dead-letter with their bytes.
    broken = entry({"resourceName": "core/v1/pods"})
    late = entry({"methodName": "io.k8s.core.v1.pods.list", "resourceName": "core/v1/pods"})
    late["timestamp"] = "yesterday"
    for data in (
        b"\x00\xffnot json",
        b'["a list"]',
        b'{"kind": "Event"}',
        orjson.dumps(broken),
        orjson.dumps(late),
    ):
        assert message_item(data) == data


def test_non_resource_request_has_its_path_and_no_object_ref() -> None:
    event = rebuilt(entry({"methodName": "io.k8s.get", "resourceName": "version"}))
    assert (event["verb"], event["requestURI"]) == ("get", "/version")
    assert "objectRef" not in event
