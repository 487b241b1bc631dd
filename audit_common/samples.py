"""Sample audit events, made here: what ``deploy/local/run``, ``deploy/local/replay-corpus`` and
``bench/`` replay, so that a clone of the repository needs nothing beside it.

Not a recording: a seeded generator of what a typical audit policy logs in a busy cluster, in
``audit.k8s.io/v1`` as kube-apiserver posts it (items without ``kind``/``apiVersion``).
Controllers and kubelets read and renew leases; people and CI apply Deployments (with kubectl's
last-applied annotation), read and write Secrets and ConfigMaps with data (so that redaction
shows), exec into pods, change RBAC (cluster-admin bindings, wildcard roles), create NodePort
Services, privileged pods and namespaces; anonymous requests are refused; some lists log their
whole response (tens to hundreds of KB). Each cluster has its own nodes, namespaces and people.
The levels and stages are those deploy/apiserver/audit-policy.yaml gives such requests (exec's
ResponseStarted and ResponseComplete, ConfigMap writes at Request), and beyond it what a broader
policy logs: Secret bodies, lease renewals, controllers' reads and whole list responses.

This module holds the scenarios and how often each happens; ``audit_common.sample_cluster`` the
cast of a cluster and the event and objects a scenario is written with. ``sample_events`` is
called by the tools above and by tests; it raises nothing.
"""

from __future__ import annotations

import base64
import copy
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from audit_common.sample_cluster import (
    NAMESPACES,
    Cluster,
    User,
    audit_event,
    object_metadata,
    pod_object,
    stamp,
)

CLUSTERS = ("prod-eu", "prod-us", "staging")


def _controller_read(cluster: Cluster) -> dict[str, Any]:
    user = cluster.rng.choice(cluster.controllers)
    namespace = cluster.rng.choice(NAMESPACES)
    resource = cluster.rng.choice(("pods", "endpoints", "replicasets", "configmaps"))
    verb = cluster.rng.choice(("get", "list", "watch"))
    uri = f"/api/v1/namespaces/{namespace}/{resource}"
    if verb == "watch":
        uri += "?allowWatchBookmarks=true&resourceVersion=8675309&watch=true"
    ref = {"resource": resource, "namespace": namespace, "apiVersion": "v1"}
    stage = "ResponseStarted" if verb == "watch" else "ResponseComplete"
    return audit_event(cluster, user, verb, uri, ref, stage=stage)


def _lease_renewal(cluster: Cluster) -> dict[str, Any]:
    user = cluster.node_user()
    node = user.username.removeprefix("system:node:")
    ref = {
        "resource": "leases",
        "namespace": "kube-node-lease",
        "name": node,
        "apiGroup": "coordination.k8s.io",
        "apiVersion": "v1",
    }
    uri = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}?timeout=10s"
    return audit_event(cluster, user, "update", uri, ref)


def _person_reads_pods(cluster: Cluster) -> dict[str, Any]:
    user = cluster.rng.choice(cluster.people)
    namespace = cluster.rng.choice(NAMESPACES)
    ref = {"resource": "pods", "namespace": namespace, "apiVersion": "v1"}
    return audit_event(cluster, user, "list", f"/api/v1/namespaces/{namespace}/pods?limit=500", ref)


def _apply_deployment(cluster: Cluster) -> dict[str, Any]:
    rng = cluster.rng
    user = rng.choice([*cluster.people, cluster.apps[0]])
    namespace = rng.choice(NAMESPACES[:4])
    name = rng.choice(("web", "api", "worker", "checkout"))
    pod = pod_object(cluster, namespace)
    deployment: dict[str, Any] = {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": object_metadata(cluster, name, namespace),
        "spec": {
            "replicas": rng.randint(1, 6),
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod["spec"]},
        },
    }
    applied = {k: deployment[k] for k in ("kind", "apiVersion", "spec")}
    deployment["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(applied) + "\n"
    }
    verb = rng.choice(("create", "patch", "update"))
    ref = {
        "resource": "deployments",
        "namespace": namespace,
        "name": name,
        "apiGroup": "apps",
        "apiVersion": "v1",
    }
    uri = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    if verb != "create":
        uri += f"/{name}?fieldManager=kubectl-client-side-apply"
    return audit_event(cluster, user, verb, uri, ref, level="Request", code=201, request=deployment)


def _secret(cluster: Cluster) -> dict[str, Any]:
    rng = cluster.rng
    namespace = rng.choice(NAMESPACES[:4])
    name = rng.choice(("db-credentials", "api-token", "tls-cert", "registry-auth"))
    ref = {"resource": "secrets", "namespace": namespace, "name": name, "apiVersion": "v1"}
    uri = f"/api/v1/namespaces/{namespace}/secrets/{name}"
    if rng.random() < 0.6:  # an application reads its Secret
        return audit_event(cluster, rng.choice(cluster.apps), "get", uri, ref)
    password = base64.b64encode(rng.randbytes(18)).decode()
    secret = {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": object_metadata(cluster, name, namespace),
        "type": "Opaque",
        "data": {
            "username": base64.b64encode(b"app").decode(),
            "password": base64.b64encode(password.encode()).decode(),
        },
    }
    verb = rng.choice(("create", "update"))
    return audit_event(
        cluster,
        rng.choice(cluster.people),
        verb,
        uri,
        ref,
        level="RequestResponse",
        code=201 if verb == "create" else 200,
        request=secret,
        response=secret,
    )


def _configmap(cluster: Cluster) -> dict[str, Any]:
    rng = cluster.rng
    namespace = rng.choice(NAMESPACES[:4])
    name = rng.choice(("app-config", "feature-flags", "nginx-conf"))
    data = {
        "LOG_LEVEL": rng.choice(("info", "debug")),
        "DATABASE_URL": f"postgres://app:{rng.getrandbits(48):012x}@db.{namespace}:5432/app",
    }
    if rng.random() < 0.3:  # a credential where a Secret belongs
        data["SMTP_PASSWORD"] = f"{rng.getrandbits(64):016x}"
    configmap = {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": object_metadata(cluster, name, namespace),
        "data": data,
    }
    ref = {"resource": "configmaps", "namespace": namespace, "name": name, "apiVersion": "v1"}
    uri = f"/api/v1/namespaces/{namespace}/configmaps"
    user = rng.choice(cluster.people)
    return audit_event(
        cluster, user, "create", uri, ref, level="Request", code=201, request=configmap
    )


def _exec(cluster: Cluster) -> list[dict[str, Any]]:
    rng = cluster.rng
    namespace = rng.choice(NAMESPACES[:4])
    pod = pod_object(cluster, namespace)["metadata"]["name"]
    command = rng.choice(("sh", "bash", "cat&command=/etc/passwd"))
    ref = {
        "resource": "pods",
        "namespace": namespace,
        "name": pod,
        "subresource": "exec",
        "apiVersion": "v1",
    }
    uri = (
        f"/api/v1/namespaces/{namespace}/pods/{pod}/exec?command={command}"
        "&container=app&stdin=true&stdout=true&tty=true"
    )
    # A stream is logged twice, as kube-apiserver does for long-running requests: when the
    # connection is upgraded (ResponseStarted) and when the session ends (ResponseComplete).
    started = audit_event(
        cluster, rng.choice(cluster.people), "create", uri, ref, code=101, stage="ResponseStarted"
    )
    ended = copy.deepcopy(started)
    session = timedelta(seconds=rng.randint(5, 600))
    ended.update(stage="ResponseComplete", stageTimestamp=stamp(cluster.now + session))
    return [started, ended]


def _rbac_change(cluster: Cluster) -> dict[str, Any]:
    rng = cluster.rng
    user = rng.choice(cluster.people)
    if rng.random() < 0.5:
        name = f"{user.username.split('@')[0]}-admin"
        binding = {
            "kind": "ClusterRoleBinding",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "User", "name": user.username}],
        }
        resource, obj = "clusterrolebindings", binding
    else:
        name = rng.choice(("debug-all", "ci-deployer"))
        rules = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
        if name == "ci-deployer":
            rules = [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]
        obj = {
            "kind": "ClusterRole",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": name},
            "rules": rules,
        }
        resource = "clusterroles"
    ref = {
        "resource": resource,
        "name": name,
        "apiGroup": "rbac.authorization.k8s.io",
        "apiVersion": "v1",
    }
    uri = f"/apis/rbac.authorization.k8s.io/v1/{resource}"
    return audit_event(cluster, user, "create", uri, ref, level="Request", code=201, request=obj)


def _large_list(cluster: Cluster) -> dict[str, Any]:
    namespace = cluster.rng.choice(NAMESPACES)
    pods = [pod_object(cluster, namespace) for _ in range(cluster.rng.randint(40, 400))]
    response = {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": str(cluster.rng.randint(10**6, 10**8))},
        "items": pods,
    }
    ref = {"resource": "pods", "namespace": namespace, "apiVersion": "v1"}
    uri = f"/api/v1/namespaces/{namespace}/pods"
    user = cluster.apps[1]
    return audit_event(cluster, user, "list", uri, ref, level="RequestResponse", response=response)


def _refused(cluster: Cluster) -> dict[str, Any]:
    anonymous = User("system:anonymous", ("system:unauthenticated",), "curl/8.5.0", "203.0.113.9")
    ref = {"resource": "secrets", "namespace": "kube-system", "apiVersion": "v1"}
    uri = "/api/v1/namespaces/kube-system/secrets"
    return audit_event(cluster, anonymous, "list", uri, ref, code=403)


def _namespace(cluster: Cluster) -> dict[str, Any]:
    name = f"review-{cluster.rng.getrandbits(24):06x}"
    obj = {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": name}}
    ref = {"resource": "namespaces", "name": name, "apiVersion": "v1"}
    verb = cluster.rng.choice(("create", "delete"))
    uri = "/api/v1/namespaces" + ("" if verb == "create" else f"/{name}")
    user = cluster.rng.choice([*cluster.people, cluster.apps[0]])
    return audit_event(cluster, user, verb, uri, ref, level="Request", code=201, request=obj)


def _nodeport_service(cluster: Cluster) -> dict[str, Any]:
    namespace = cluster.rng.choice(NAMESPACES[:4])
    service = {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": object_metadata(cluster, "debug-svc", namespace),
        "spec": {
            "type": "NodePort",
            "selector": {"app": "web"},
            "ports": [
                {"port": 80, "targetPort": 8080, "nodePort": cluster.rng.randint(30000, 32767)}
            ],
        },
    }
    ref = {"resource": "services", "namespace": namespace, "name": "debug-svc", "apiVersion": "v1"}
    uri = f"/api/v1/namespaces/{namespace}/services"
    user = cluster.rng.choice(cluster.people)
    return audit_event(
        cluster, user, "create", uri, ref, level="Request", code=201, request=service
    )


def _privileged_pod(cluster: Cluster) -> dict[str, Any]:
    namespace = cluster.rng.choice(NAMESPACES[:4])
    pod = pod_object(cluster, namespace, privileged=True)
    name = pod["metadata"]["name"]
    ref = {"resource": "pods", "namespace": namespace, "name": name, "apiVersion": "v1"}
    uri = f"/api/v1/namespaces/{namespace}/pods"
    user = cluster.rng.choice(cluster.people)
    return audit_event(cluster, user, "create", uri, ref, level="Request", code=201, request=pod)


# Each scenario makes one request's event, or its events (a stream's two stages).
_Maker = Callable[[Cluster], dict[str, Any] | list[dict[str, Any]]]
_SCENARIOS: tuple[tuple[_Maker, int], ...] = (
    (_controller_read, 34),
    (_lease_renewal, 16),
    (_person_reads_pods, 10),
    (_apply_deployment, 9),
    (_secret, 8),
    (_configmap, 5),
    (_exec, 4),
    (_rbac_change, 3),
    (_large_list, 3),
    (_refused, 3),
    (_namespace, 2),
    (_nodeport_service, 2),
    (_privileged_pod, 1),
)


def sample_events(
    count: int, *, cluster: str = CLUSTERS[0], seed: int = 1, start: datetime | None = None
) -> list[dict[str, Any]]:
    """``count`` events of ``cluster``, as EventList items, requests oldest first; the same for
    a seed. An exec is two events, its ResponseStarted and ResponseComplete stages.

    ``start`` is when the first request arrives (by default a minute before now).
    """
    rng = random.Random(f"{seed}:{cluster}")
    state = Cluster(cluster, rng, start or datetime.now(UTC) - timedelta(minutes=1))
    makers = [maker for maker, _ in _SCENARIOS]
    weights = [weight for _, weight in _SCENARIOS]
    events: list[dict[str, Any]] = []
    while len(events) < count:
        made = rng.choices(makers, weights)[0](state)
        events.extend(made if isinstance(made, list) else [made])
    return events[:count]
