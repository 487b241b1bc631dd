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
"""

from __future__ import annotations

import base64
import copy
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

CLUSTERS = ("prod-eu", "prod-us", "staging")
API_VERSION = "audit.k8s.io/v1"
_KUBECTL = "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46"
_CONTROLLER = (
    "kube-controller-manager/v1.31.2 (linux/amd64) kubernetes/5864a46/"
    "system:serviceaccount:kube-system:{name}"
)
_NAMESPACES = ("default", "payments", "checkout", "search", "monitoring", "argocd", "kube-system")
_PEOPLE = ("alice", "bob", "carol", "dmitri", "erin", "farah")
_TEAMS = ("dev", "sre", "data")
_IMAGES = ("nginx:1.27", "ghcr.io/acme/payments:4.2.0", "redis:7.4", "busybox:1.36")


@dataclass(frozen=True)
class _User:
    username: str
    groups: tuple[str, ...]
    user_agent: str
    source_ip: str

    def as_json(self, uid: str) -> dict[str, Any]:
        return {"username": self.username, "uid": uid, "groups": list(self.groups)}


class _Cluster:
    """One cluster's cast: its nodes, namespaces, people, service accounts, and a clock."""

    def __init__(self, name: str, rng: random.Random, start: datetime) -> None:
        self.name = name
        self.rng = rng
        self.now = start
        self.nodes = [f"{name}-node-{n}" for n in range(1, 7)]
        tail = rng.randint(10, 250)
        self.people = [
            _User(
                f"{person}@{name}.example.com",
                ("system:authenticated", f"team:{rng.choice(_TEAMS)}"),
                _KUBECTL,
                f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{tail}",
            )
            for person in _PEOPLE
        ]
        self.controllers = [
            _User(
                f"system:serviceaccount:kube-system:{sa}",
                ("system:serviceaccounts", "system:serviceaccounts:kube-system"),
                _CONTROLLER.format(name=sa),
                "172.20.0.10",
            )
            for sa in ("replicaset-controller", "deployment-controller", "endpoint-controller")
        ]
        self.apps = [
            _User(
                f"system:serviceaccount:{namespace}:{sa}",
                ("system:serviceaccounts", f"system:serviceaccounts:{namespace}"),
                agent,
                f"10.244.{rng.randint(0, 63)}.{rng.randint(2, 250)}",
            )
            for namespace, sa, agent in (
                ("argocd", "argocd-application-controller", "argocd-application-controller/v2.12"),
                ("monitoring", "prometheus", "Prometheus/2.54.1"),
                ("payments", "default", "python-requests/2.32"),
            )
        ]

    def tick(self) -> tuple[str, str]:
        """The request's received and stage timestamps, a few milliseconds apart."""
        self.now += timedelta(milliseconds=self.rng.randint(1, 40))
        received = self.now
        stage = received + timedelta(microseconds=self.rng.randint(300, 90_000))
        return _stamp(received), _stamp(stage)

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def node_user(self) -> _User:
        node = self.rng.choice(self.nodes)
        return _User(f"system:node:{node}", ("system:nodes",), "kubelet/v1.31.2", "10.0.1.17")


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event(
    cluster: _Cluster,
    user: _User,
    verb: str,
    uri: str,
    ref: dict[str, str],
    *,
    level: str = "Metadata",
    code: int = 200,
    request: Any = None,
    response: Any = None,
    stage: str = "ResponseComplete",
) -> dict[str, Any]:
    received, staged = cluster.tick()
    event: dict[str, Any] = {
        "level": level,
        "auditID": cluster.uid(),
        "stage": stage,
        "requestURI": uri,
        "verb": verb,
        "user": user.as_json(cluster.uid()),
        "sourceIPs": [user.source_ip],
        "userAgent": user.user_agent,
        "objectRef": ref,
        "responseStatus": {"metadata": {}, "code": code},
    }
    if code >= 400:
        event["responseStatus"].update(status="Failure", reason="Forbidden")
    if request is not None and level in ("Request", "RequestResponse"):
        event["requestObject"] = request
    if response is not None and level == "RequestResponse":
        event["responseObject"] = response
    event["requestReceivedTimestamp"] = received
    event["stageTimestamp"] = staged
    if code == 403:
        event["annotations"] = {"authorization.k8s.io/decision": "forbid"}
    else:
        role = "edit" if user.username.endswith(".example.com") else "system:controller"
        event["annotations"] = {
            "authorization.k8s.io/decision": "allow",
            "authorization.k8s.io/reason": f'RBAC: allowed by ClusterRoleBinding "{role}" of '
            f'ClusterRole "{role}" to User "{user.username}"',
        }
    return event


def _metadata(cluster: _Cluster, name: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "uid": cluster.uid(),
        "resourceVersion": str(cluster.rng.randint(10**6, 10**8)),
        "creationTimestamp": (cluster.now - timedelta(days=cluster.rng.randint(0, 90))).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
        "labels": {"app.kubernetes.io/name": name.split("-")[0]},
    }
    if namespace:
        meta["namespace"] = namespace
    return meta


def _pod(cluster: _Cluster, namespace: str, *, privileged: bool = False) -> dict[str, Any]:
    rng = cluster.rng
    name = f"{rng.choice(('web', 'api', 'worker', 'cache'))}-{rng.getrandbits(40):010x}"[:20]
    container: dict[str, Any] = {
        "name": name.split("-")[0],
        "image": rng.choice(_IMAGES),
        "ports": [{"containerPort": rng.choice((80, 8080, 6379)), "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    }
    spec: dict[str, Any] = {
        "containers": [container],
        "serviceAccountName": "default",
        "nodeName": rng.choice(cluster.nodes),
    }
    if privileged:
        container["securityContext"] = {"privileged": True}
        spec.update(hostPID=True, hostNetwork=True)
        spec["volumes"] = [{"name": "root", "hostPath": {"path": "/", "type": "Directory"}}]
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": _metadata(cluster, name, namespace),
        "spec": spec,
        "status": {
            "phase": "Running",
            "podIP": f"10.244.{rng.randint(0, 63)}.{rng.randint(2, 250)}",
        },
    }


def _controller_read(cluster: _Cluster) -> dict[str, Any]:
    user = cluster.rng.choice(cluster.controllers)
    namespace = cluster.rng.choice(_NAMESPACES)
    resource = cluster.rng.choice(("pods", "endpoints", "replicasets", "configmaps"))
    verb = cluster.rng.choice(("get", "list", "watch"))
    uri = f"/api/v1/namespaces/{namespace}/{resource}"
    if verb == "watch":
        uri += "?allowWatchBookmarks=true&resourceVersion=8675309&watch=true"
    ref = {"resource": resource, "namespace": namespace, "apiVersion": "v1"}
    stage = "ResponseStarted" if verb == "watch" else "ResponseComplete"
    return _event(cluster, user, verb, uri, ref, stage=stage)


def _lease_renewal(cluster: _Cluster) -> dict[str, Any]:
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
    return _event(cluster, user, "update", uri, ref)


def _person_reads_pods(cluster: _Cluster) -> dict[str, Any]:
    user = cluster.rng.choice(cluster.people)
    namespace = cluster.rng.choice(_NAMESPACES)
    ref = {"resource": "pods", "namespace": namespace, "apiVersion": "v1"}
    return _event(cluster, user, "list", f"/api/v1/namespaces/{namespace}/pods?limit=500", ref)


def _apply_deployment(cluster: _Cluster) -> dict[str, Any]:
    rng = cluster.rng
    user = rng.choice([*cluster.people, cluster.apps[0]])
    namespace = rng.choice(_NAMESPACES[:4])
    name = rng.choice(("web", "api", "worker", "checkout"))
    pod = _pod(cluster, namespace)
    deployment: dict[str, Any] = {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": _metadata(cluster, name, namespace),
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
    return _event(cluster, user, verb, uri, ref, level="Request", code=201, request=deployment)


def _secret(cluster: _Cluster) -> dict[str, Any]:
    rng = cluster.rng
    namespace = rng.choice(_NAMESPACES[:4])
    name = rng.choice(("db-credentials", "api-token", "tls-cert", "registry-auth"))
    ref = {"resource": "secrets", "namespace": namespace, "name": name, "apiVersion": "v1"}
    uri = f"/api/v1/namespaces/{namespace}/secrets/{name}"
    if rng.random() < 0.6:  # an application reads its Secret
        return _event(cluster, rng.choice(cluster.apps), "get", uri, ref)
    password = base64.b64encode(rng.randbytes(18)).decode()
    secret = {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": _metadata(cluster, name, namespace),
        "type": "Opaque",
        "data": {
            "username": base64.b64encode(b"app").decode(),
            "password": base64.b64encode(password.encode()).decode(),
        },
    }
    verb = rng.choice(("create", "update"))
    return _event(
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


def _configmap(cluster: _Cluster) -> dict[str, Any]:
    rng = cluster.rng
    namespace = rng.choice(_NAMESPACES[:4])
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
        "metadata": _metadata(cluster, name, namespace),
        "data": data,
    }
    ref = {"resource": "configmaps", "namespace": namespace, "name": name, "apiVersion": "v1"}
    uri = f"/api/v1/namespaces/{namespace}/configmaps"
    user = rng.choice(cluster.people)
    return _event(cluster, user, "create", uri, ref, level="Request", code=201, request=configmap)


def _exec(cluster: _Cluster) -> list[dict[str, Any]]:
    rng = cluster.rng
    namespace = rng.choice(_NAMESPACES[:4])
    pod = _pod(cluster, namespace)["metadata"]["name"]
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
    started = _event(
        cluster, rng.choice(cluster.people), "create", uri, ref, code=101, stage="ResponseStarted"
    )
    ended = copy.deepcopy(started)
    session = timedelta(seconds=rng.randint(5, 600))
    ended.update(stage="ResponseComplete", stageTimestamp=_stamp(cluster.now + session))
    return [started, ended]


def _rbac_change(cluster: _Cluster) -> dict[str, Any]:
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
    return _event(cluster, user, "create", uri, ref, level="Request", code=201, request=obj)


def _large_list(cluster: _Cluster) -> dict[str, Any]:
    namespace = cluster.rng.choice(_NAMESPACES)
    pods = [_pod(cluster, namespace) for _ in range(cluster.rng.randint(40, 400))]
    response = {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": str(cluster.rng.randint(10**6, 10**8))},
        "items": pods,
    }
    ref = {"resource": "pods", "namespace": namespace, "apiVersion": "v1"}
    uri = f"/api/v1/namespaces/{namespace}/pods"
    user = cluster.apps[1]
    return _event(cluster, user, "list", uri, ref, level="RequestResponse", response=response)


def _refused(cluster: _Cluster) -> dict[str, Any]:
    anonymous = _User("system:anonymous", ("system:unauthenticated",), "curl/8.5.0", "203.0.113.9")
    ref = {"resource": "secrets", "namespace": "kube-system", "apiVersion": "v1"}
    uri = "/api/v1/namespaces/kube-system/secrets"
    return _event(cluster, anonymous, "list", uri, ref, code=403)


def _namespace(cluster: _Cluster) -> dict[str, Any]:
    name = f"review-{cluster.rng.getrandbits(24):06x}"
    obj = {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": name}}
    ref = {"resource": "namespaces", "name": name, "apiVersion": "v1"}
    verb = cluster.rng.choice(("create", "delete"))
    uri = "/api/v1/namespaces" + ("" if verb == "create" else f"/{name}")
    user = cluster.rng.choice([*cluster.people, cluster.apps[0]])
    return _event(cluster, user, verb, uri, ref, level="Request", code=201, request=obj)


def _nodeport_service(cluster: _Cluster) -> dict[str, Any]:
    namespace = cluster.rng.choice(_NAMESPACES[:4])
    service = {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": _metadata(cluster, "debug-svc", namespace),
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
    return _event(cluster, user, "create", uri, ref, level="Request", code=201, request=service)


def _privileged_pod(cluster: _Cluster) -> dict[str, Any]:
    namespace = cluster.rng.choice(_NAMESPACES[:4])
    pod = _pod(cluster, namespace, privileged=True)
    name = pod["metadata"]["name"]
    ref = {"resource": "pods", "namespace": namespace, "name": name, "apiVersion": "v1"}
    uri = f"/api/v1/namespaces/{namespace}/pods"
    user = cluster.rng.choice(cluster.people)
    return _event(cluster, user, "create", uri, ref, level="Request", code=201, request=pod)


# Each scenario makes one request's event, or its events (a stream's two stages).
_Maker = Callable[[_Cluster], dict[str, Any] | list[dict[str, Any]]]
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
    state = _Cluster(cluster, rng, start or datetime.now(UTC) - timedelta(minutes=1))
    makers = [maker for maker, _ in _SCENARIOS]
    weights = [weight for _, weight in _SCENARIOS]
    events: list[dict[str, Any]] = []
    while len(events) < count:
        made = rng.choices(makers, weights)[0](state)
        events.extend(made if isinstance(made, list) else [made])
    return events[:count]
