"""One sample cluster's cast and clock, and the audit event and objects its requests are
logged with, in ``audit.k8s.io/v1`` as kube-apiserver writes them.

Used only by ``audit_common.samples``, whose scenarios pick who does what in a ``Cluster`` and
build each request's event with ``audit_event``; every choice is drawn from the cluster's
seeded ``rng``, so a seed gives the same events. Nothing here raises.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

_KUBECTL = "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46"
_CONTROLLER = (
    "kube-controller-manager/v1.31.2 (linux/amd64) kubernetes/5864a46/"
    "system:serviceaccount:kube-system:{name}"
)
NAMESPACES = ("default", "payments", "checkout", "search", "monitoring", "argocd", "kube-system")
_PEOPLE = ("alice", "bob", "carol", "dmitri", "erin", "farah")
_TEAMS = ("dev", "sre", "data")
_IMAGES = ("nginx:1.27", "ghcr.io/acme/payments:4.2.0", "redis:7.4", "busybox:1.36")


@dataclass(frozen=True)
class User:
    """Who sends a request: a person, a controller, an application, a kubelet, anonymous."""

    username: str
    groups: tuple[str, ...]
    user_agent: str
    source_ip: str

    def as_json(self, uid: str) -> dict[str, Any]:
        return {"username": self.username, "uid": uid, "groups": list(self.groups)}


class Cluster:
    """One cluster's cast: its nodes, namespaces, people, service accounts, and a clock."""

    def __init__(self, name: str, rng: random.Random, start: datetime) -> None:
        self.name = name
        self.rng = rng
        self.now = start
        self.nodes = [f"{name}-node-{n}" for n in range(1, 7)]
        tail = rng.randint(10, 250)
        self.people = [
            User(
                f"{person}@{name}.example.com",
                ("system:authenticated", f"team:{rng.choice(_TEAMS)}"),
                _KUBECTL,
                f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{tail}",
            )
            for person in _PEOPLE
        ]
        self.controllers = [
            User(
                f"system:serviceaccount:kube-system:{sa}",
                ("system:serviceaccounts", "system:serviceaccounts:kube-system"),
                _CONTROLLER.format(name=sa),
                "172.20.0.10",
            )
            for sa in ("replicaset-controller", "deployment-controller", "endpoint-controller")
        ]
        self.apps = [
            User(
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
        return stamp(received), stamp(stage)

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def node_user(self) -> User:
        node = self.rng.choice(self.nodes)
        return User(f"system:node:{node}", ("system:nodes",), "kubelet/v1.31.2", "10.0.1.17")


def stamp(moment: datetime) -> str:
    """``moment`` as kube-apiserver writes an event's timestamps (microseconds, ``Z``)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit_event(
    cluster: Cluster,
    user: User,
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
    """The event of one request by ``user`` at ``cluster``'s next tick, with the request and
    response bodies its ``level`` logs, and the authorizer's annotations."""
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


def object_metadata(cluster: Cluster, name: str, namespace: str | None) -> dict[str, Any]:
    """An object's ``metadata``, as the API server answers it (uid, resourceVersion...)."""
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


def pod_object(cluster: Cluster, namespace: str, *, privileged: bool = False) -> dict[str, Any]:
    """A running Pod on one of ``cluster``'s nodes; ``privileged`` with the host's namespaces
    and root filesystem."""
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
        "metadata": object_metadata(cluster, name, namespace),
        "spec": spec,
        "status": {
            "phase": "Running",
            "podIP": f"10.244.{rng.randint(0, 63)}.{rng.randint(2, 250)}",
        },
    }
