"""Audit events of every shape the tests need, written here so that a clone needs nothing beside
it: the requests the default rules are about and the plain ones beside them (``REQUESTS``), as
kube-apiserver logs them (tests.support.audit_policy), and ``audit_events()``, a fixed mix of
them with the project's samples and the older forms an apiserver may still send.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from audit_common.samples import CLUSTERS, sample_events
from tests.support.audit_policy import AuditPolicy, Event, Request

ADMIN = ("minikube-user", ("system:masters", "system:authenticated"))
ANONYMOUS = ("system:anonymous", ("system:unauthenticated",))
RBAC = "rbac.authorization.k8s.io"
_EPOCH = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _meta(name: str, namespace: str = "", **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "creationTimestamp": None, **extra}
    if namespace:
        meta["namespace"] = namespace
    return meta


def container(name: str = "nginx", image: str = "nginx:1.27", **security: Any) -> dict[str, Any]:
    made: dict[str, Any] = {
        "name": name,
        "image": image,
        "ports": [{"containerPort": 80, "protocol": "TCP"}],
        "resources": {},
    }
    if security:
        made["securityContext"] = security
    return made


def pod_body(
    *containers: dict[str, Any],
    namespace: str = "default",
    name: str = "nginx",
    host_paths: tuple[str, ...] = (),
    **spec: Any,
) -> dict[str, Any]:
    body_spec: dict[str, Any] = {"containers": list(containers or [container()]), **spec}
    if host_paths:
        body_spec["volumes"] = [
            {"name": f"host-{n}", "hostPath": {"path": path, "type": ""}}
            for n, path in enumerate(host_paths)
        ]
        body_spec["containers"][0]["volumeMounts"] = [
            {"name": f"host-{n}", "mountPath": f"/host/{n}"} for n in range(len(host_paths))
        ]
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": _meta(name, namespace, labels={"app": name}),
        "spec": body_spec,
        "status": {},
    }


def asked(
    verb: str,
    resource: str,
    *,
    user: tuple[str, tuple[str, ...]] = ADMIN,
    namespace: str = "default",
    body: dict[str, Any] | None = None,
    **fields: Any,
) -> Request:
    """A request of ``user`` (by default the admin of Falco's traces) in ``namespace``: its body,
    if any, is also what the apiserver answers, with 201 to a create and 200 otherwise."""
    fields.setdefault("response", body)
    fields.setdefault("code", 201 if verb == "create" else 200)
    return Request(
        user[0], verb, resource, namespace=namespace, groups=user[1], body=body, **fields
    )


def pod_created(body: dict[str, Any]) -> Request:
    metadata = body["metadata"]
    return asked(
        "create", "pods", namespace=metadata["namespace"], name=metadata["name"], body=body
    )


def role_body(kind: str, name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "apiVersion": f"{RBAC}/v1", "metadata": _meta(name), "rules": list(rules)}


def rule(resources: list[str], verbs: list[str], groups: tuple[str, ...] = ("",)) -> dict[str, Any]:
    return {"apiGroups": list(groups), "resources": resources, "verbs": verbs}


def rbac_request(verb: str, resource: str, name: str, body: dict[str, Any] | None) -> Request:
    return asked(verb, resource, namespace="", group=RBAC, name=name, body=body)


def clusterrole_created(name: str, *rules: dict[str, Any]) -> Request:
    return rbac_request("create", "clusterroles", name, role_body("ClusterRole", name, *rules))


def binding_body(name: str, role: str) -> dict[str, Any]:
    return {
        "kind": "ClusterRoleBinding",
        "apiVersion": f"{RBAC}/v1",
        "metadata": _meta(name),
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "minikube"}],
    }


def configmap_created(data: dict[str, str], name: str = "my-config") -> Request:
    body = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": _meta(name, "default")}
    body["data"] = data
    return asked("create", "configmaps", name=name, body=body)


def secret_body(name: str, namespace: str = "default", **data: bytes) -> dict[str, Any]:
    return {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": _meta(name, namespace),
        "type": "Opaque",
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


def secret_created(namespace: str = "default") -> Request:
    body = secret_body("example-secret", namespace, username=b"admin", password=b"s3cr3t-Pa55")
    return asked("create", "secrets", namespace=namespace, name="example-secret", body=body)


def service_created(service_type: str | None) -> Request:
    spec: dict[str, Any] = {"selector": {"app": "nginx"}, "ports": [{"port": 80, "targetPort": 80}]}
    if service_type:
        spec["type"] = service_type
    if service_type == "NodePort":
        spec["ports"][0]["nodePort"] = 30080
    body = {"kind": "Service", "apiVersion": "v1", "metadata": _meta("nginx", "default")}
    body["spec"] = spec
    return asked("create", "services", name="nginx", body=body)


def namespace_request(verb: str, name: str, user: tuple[str, tuple[str, ...]]) -> Request:
    body = {"kind": "Namespace", "apiVersion": "v1", "metadata": _meta(name), "spec": {}}
    sent = body if verb == "create" else None
    return asked(verb, "namespaces", user=user, namespace="", name=name, body=sent, response=body)


def stream(subresource: str, *, allowed: bool = True) -> Request:
    """kubectl exec or attach into a pod: the apiserver upgrades the connection (101)."""
    query = "command=bash&container=nginx&stdin=true&stdout=true&tty=true"
    if subresource == "attach":
        query = "container=nginx&stdin=true&stdout=true&tty=true"
    return asked(
        "create",
        f"pods/{subresource}",
        name="nginx-deployment-7998647bdf-phvq7",
        query=query,
        code=101 if allowed else 403,
        allowed=allowed,
    )


_LONG_WAY_OUT = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA...\n-----END RSA PRIVATE KEY-----"
)
_ROLE_PODS = rule(["pods"], ["get", "list", "watch"])

# Every kind of request the tests talk about, by name: those the default rules detect, and
# plain ones of the same resources that they leave alone.
REQUESTS: dict[str, Request] = {
    "exec": stream("exec"),
    "attach": stream("attach"),
    "exec refused": stream("exec", allowed=False),
    "pod": pod_created(pod_body()),
    "pod hostNetwork": pod_created(pod_body(hostNetwork=True)),
    "pod hostNetwork false": pod_created(pod_body(hostNetwork=False)),
    "pod privileged": pod_created(pod_body(container(privileged=True))),
    "pod privileged 2nd container": pod_created(
        pod_body(container("nginx1", privileged=False), container("nginx2", privileged=True))
    ),
    "pod privileged 2nd container, 1st without securityContext": pod_created(
        pod_body(container("nginx1"), container("nginx2", privileged=True))
    ),
    "pod in kube-system": pod_created(pod_body(namespace="kube-system")),
    "pod mounting /etc": pod_created(pod_body(host_paths=("/etc",))),
    "pod mounting /etc, 2 containers": pod_created(
        pod_body(container("nginx1"), container("nginx2"), host_paths=("/etc",))
    ),
    "pod mounting a harmless path": pod_created(pod_body(host_paths=("/var/log/app",))),
    "deployment": asked(
        "create",
        "deployments",
        group="apps",
        name="nginx-deployment",
        body={
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": _meta("nginx-deployment", "default"),
            "spec": {"replicas": 2, "template": {"spec": pod_body()["spec"]}},
        },
        code=201,
    ),
    "binding to cluster-admin": rbac_request(
        "create",
        "clusterrolebindings",
        "some-reader-binding",
        binding_body("some-reader-binding", "cluster-admin"),
    ),
    "binding to another role": rbac_request(
        "create",
        "clusterrolebindings",
        "some-reader-binding",
        binding_body("some-reader-binding", "some-reader"),
    ),
    "binding deleted": rbac_request("delete", "clusterrolebindings", "some-reader-binding", None),
    "clusterrole": clusterrole_created("some-reader", _ROLE_PODS),
    "clusterrole with write verbs": clusterrole_created(
        "some-writer", rule(["pods"], ["create", "update", "delete"])
    ),
    "clusterrole with wildcard verbs": clusterrole_created("some-reader", rule(["pods"], ["*"])),
    "clusterrole with wildcard resources": clusterrole_created("some-reader", rule(["*"], ["get"])),
    "clusterrole granting pods/exec": clusterrole_created(
        "pod-exec", rule(["pods/exec"], ["create", "get"])
    ),
    "clusterrole deleted": rbac_request("delete", "clusterroles", "some-reader", None),
    "system clusterrole patched": rbac_request(
        "patch",
        "clusterroles",
        "system:node-problem-detector",
        {"rules": [rule(["nodes"], ["get", "patch"])]},
    ),
    "system clusterrole deleted": rbac_request(
        "delete", "clusterroles", "system:aggregate-to-admin", None
    ),
    "secret created": secret_created(),
    "secret created in kube-system": secret_created("kube-system"),
    "secret deleted": asked("delete", "secrets", name="example-secret"),
    "secret read": asked(
        "get",
        "secrets",
        user=("system:serviceaccount:ci:deployer", ("system:serviceaccounts",)),
        name="db-password",
        user_agent="python-requests/2.32",
    ),
    "token secret by the controller manager": asked(
        "create",
        "secrets",
        user=("system:kube-controller-manager", ("system:authenticated",)),
        namespace="test2",
        name="default-token-7v4pb",
        body=secret_body("default-token-7v4pb", "test2", token=b"eyJhbGciOi.x.y"),
    ),
    "configmap with credentials": configmap_created(
        {
            "access.properties": "aws_access_key_id = MY-ID\naws_secret_access_key = MY-KEY\n",
            "ui.properties": "color.good=purple\ncolor.bad=yellow\n",
        }
    ),
    "configmap with a private key": configmap_created({"tls.key": _LONG_WAY_OUT}, "tls"),
    "configmap of colors": configmap_created({"ui.properties": "color.good=purple\n"}),
    "configmap": configmap_created({"LOG_LEVEL": "info", "REPLICAS": "3"}),
    "configmap deleted": asked("delete", "configmaps", name="my-config"),
    "service NodePort": service_created("NodePort"),
    "service ClusterIP": service_created("ClusterIP"),
    "service": service_created(None),
    "serviceaccount": asked(
        "create",
        "serviceaccounts",
        name="deployer",
        body={"kind": "ServiceAccount", "apiVersion": "v1", "metadata": _meta("deployer")},
        code=201,
    ),
    "token request": asked(
        "create",
        "serviceaccounts/token",
        namespace="ci",
        name="deployer",
        body={
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "spec": {"audiences": ["vault"], "expirationSeconds": 3600},
        },
        code=201,
    ),
    "anonymous creates a namespace": namespace_request("create", "foo", ANONYMOUS),
    "anonymous lists pods": asked("list", "pods", user=ANONYMOUS),
    "user creates a namespace": namespace_request("create", "foo", ADMIN),
    "another user creates a namespace": namespace_request(
        "create", "foo", ("some-user", ("system:authenticated",))
    ),
    "namespace deleted": namespace_request("delete", "foo", ADMIN),
}


def logged(name: str, policy: AuditPolicy | None = None, **changes: Any) -> list[Event]:
    """The events of ``REQUESTS[name]`` (with ``changes``) under ``policy``; by default every
    request at RequestResponse, as most recorded traces are."""
    request = dataclasses.replace(REQUESTS[name], **changes)
    return (policy or AuditPolicy.everything()).audit(request)


def _legacy(event: Event, api_version: str | None) -> Event:
    """``event`` as an apiserver of the audit.k8s.io/v1beta1 days wrote it: kind and apiVersion
    on the item, object metadata and a timestamp of its own."""
    stamp = event["requestReceivedTimestamp"][:19] + "Z"
    old: Event = {"kind": "Event"}
    if api_version:
        old["apiVersion"] = api_version
    return {**old, **event, "metadata": {"creationTimestamp": stamp}, "timestamp": stamp}


def audit_events(*, valid_only: bool = True) -> list[Event]:
    """A fixed mix of about a hundred events of every shape, each under 8 KB, oldest first:

    - every request of ``REQUESTS`` at RequestResponse, some as v1beta1 items (with kind,
      apiVersion, metadata, timestamp) and some with kind but no apiVersion, as old traces are;
    - the same requests under the shipped policy (levels Metadata to Request, exec's and
      attach's ResponseStarted);
    - two pairs of distinct events that share auditID, stage and stageTimestamp (the same
      request logged twice, once at another level), which the message contract keeps apart;
    - sample events of each cluster (audit_common.samples);
    - with ``valid_only=False``, an item that is no event at all (``{"kind": 0}``).

    None carries a Secret's values, which the relay would redact: tests of redaction write
    their own.
    """
    shipped = AuditPolicy.load()
    events: list[Event] = []
    for index, name in enumerate(REQUESTS):
        at = _EPOCH + timedelta(seconds=index)
        for event in AuditPolicy.everything().audit(REQUESTS[name], at=at):
            if index % 4 == 1:
                event = _legacy(event, "audit.k8s.io/v1beta1")
            elif index % 4 == 2:
                event = _legacy(event, None)
            events.append(event)
        events.extend(shipped.audit(REQUESTS[name], audit_id=f"shipped-{index:03d}", at=at))
    for name in ("configmap", "pod privileged"):
        at = _EPOCH + timedelta(seconds=list(REQUESTS).index(name))
        twins = AuditPolicy.everything("Request").audit(REQUESTS[name], at=at)
        events.extend(event for event in twins if event["stage"] == "ResponseComplete")
    for cluster in CLUSTERS:
        made = sample_events(40, cluster=cluster, seed=27, start=_EPOCH)
        events.extend(event for event in made if len(orjson.dumps(event)) < 8192)
    events = [event for event in events if not carries_secret_values(event)]
    if not valid_only:
        events.append({"kind": 0})
    return copy.deepcopy(events)


def carries_secret_values(event: Event) -> bool:
    """Whether ``event`` holds a Secret object (logged at level Request or above)."""
    bodies = "requestObject" in event or "responseObject" in event
    return bodies and event.get("objectRef", {}).get("resource") == "secrets"


def event_list(items: list[Any], api_version: str = "audit.k8s.io/v1") -> bytes:
    """An EventList body, compact with a trailing newline, as the apiserver sends it."""
    body = {"kind": "EventList", "apiVersion": api_version, "metadata": {}, "items": items}
    return orjson.dumps(body) + b"\n"
