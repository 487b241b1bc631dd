"""A real Pub/Sub emulator (deploy/local/pubsub: Google's pstest over gRPC) and GKE audit
entries as a Cloud Logging sink publishes them, each with the Event it must be rebuilt into."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import orjson
from google.pubsub_v1 import PublisherAsyncClient, PubsubMessage, SubscriberAsyncClient
from google.pubsub_v1.services.publisher.transports.grpc_asyncio import (
    PublisherGrpcAsyncIOTransport,
)
from google.pubsub_v1.services.subscriber.transports.grpc_asyncio import (
    SubscriberGrpcAsyncIOTransport,
)

REPO = Path(__file__).resolve().parents[2]
PUBSUB_SCRIPT = REPO / "deploy" / "local" / "pubsub"
PROJECT = "acme-prod"


@dataclass
class LocalPubSub:
    """An emulator started by deploy/local/pubsub on 127.0.0.1:``port``; subscriptions may have
    ack deadlines down to 1 s."""

    port: int
    state_dir: Path

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self, command: str) -> None:
        flags = ["--port", str(self.port), "--state-dir", str(self.state_dir)]
        subprocess.run(
            [str(PUBSUB_SCRIPT), command, *flags, "--min-ack-deadline", "1"],
            check=True,
            timeout=300,  # built on a first start (deploy/local/setup --for-tests does it)
            capture_output=True,
        )

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        self._run("stop")

    async def create(self, topic: str, subscription: str, ack_deadline: int) -> None:
        """Topic ``projects/PROJECT/topics/TOPIC`` and its subscription."""
        async with self._publisher() as publisher:
            await publisher.create_topic(name=topic)
        async with self._subscriber() as subscriber:
            await subscriber.create_subscription(
                name=subscription, topic=topic, ack_deadline_seconds=ack_deadline
            )

    async def publish(self, topic: str, data: Sequence[bytes]) -> None:
        """Each of ``data`` as one message, as a log sink publishes its entries."""
        async with self._publisher() as publisher:
            for start in range(0, len(data), 500):
                messages = [PubsubMessage(data=item) for item in data[start : start + 500]]
                await publisher.publish(topic=topic, messages=messages)

    async def available(self, subscription: str) -> int:
        """How many messages another reader of ``subscription`` would get now (pulled, not
        acknowledged: they come back after the ack deadline). The emulator answers a Pull with
        nothing after half a second."""
        async with self._subscriber() as subscriber:
            response = await subscriber.pull(subscription=subscription, max_messages=1000)
        return len(response.received_messages)

    def _publisher(self) -> PublisherAsyncClient:
        channel = grpc.aio.insecure_channel(self.endpoint)
        return PublisherAsyncClient(transport=PublisherGrpcAsyncIOTransport(channel=channel))

    def _subscriber(self) -> SubscriberAsyncClient:
        channel = grpc.aio.insecure_channel(self.endpoint)
        return SubscriberAsyncClient(transport=SubscriberGrpcAsyncIOTransport(channel=channel))


# The requests of the entries made below: methodName's resource part, the verb, the API group
# and version, namespaced or not, the name (None for a collection), the subresource.
_REQUESTS: list[tuple[str, str, str, str, bool, str | None, str]] = [
    ("pods", "create", "core", "v1", True, "web-{n}", ""),
    ("pods", "get", "core", "v1", True, "web-{n}", ""),
    ("pods", "list", "core", "v1", True, None, ""),
    ("pods", "watch", "core", "v1", True, None, ""),
    ("pods", "create", "core", "v1", True, "web-{n}", "exec"),
    ("secrets", "get", "core", "v1", True, "db-{n}", ""),
    ("nodes", "get", "core", "v1", False, "node-{n}", ""),
    ("deployments", "patch", "apps", "v1", True, "api-{n}", ""),
    ("deployments", "update", "apps", "v1", True, "api-{n}", "scale"),
    ("clusterrolebindings", "delete", "rbac.authorization.k8s.io", "v1", False, "crb-{n}", ""),
    ("configmaps", "deletecollection", "core", "v1", True, None, ""),
]


def gke_entries(count: int, *, seed: int) -> list[tuple[bytes, dict[str, Any]]]:
    """``count`` Kubernetes audit entries as GKE writes them (the JSON a sink publishes), each
    with the Event they are rebuilt into, written out here field by field. One in seven is
    denied (google.rpc code 7, PERMISSION_DENIED)."""
    rng = random.Random(seed)
    made = []
    for n in range(count):
        resource, verb, group, version, namespaced, name, sub = rng.choice(_REQUESTS)
        name = name.format(n=n) if name else None
        namespace = rng.choice(["default", "payments", "kube-system"]) if namespaced else ""
        denied = n % 7 == 3
        path = [group, version]
        path += ["namespaces", namespace] if namespace else []
        path += [resource] + ([name] if name else []) + ([sub] if sub else [])
        resource_name = "/".join(path)
        # GKE names a group backwards: rbac.authorization.k8s.io -> authorization.rbac
        dotted = ".".join(reversed(group.removesuffix(".k8s.io").split(".")))
        method = ".".join(p for p in ("io.k8s", dotted, version, resource, sub, verb) if p)
        user = rng.choice(["alice@acme.example", "system:serviceaccount:ci:deployer"])
        ip = f"10.{n % 250}.{rng.randrange(250)}.{rng.randrange(1, 250)}"
        agent = rng.choice(["kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46", "argocd/v2.13"])
        audit_id = f"{rng.getrandbits(32):08x}-0000-4000-8000-{n:012d}"
        second = n % 60
        timestamp = f"2026-12-07T10:{n // 60 % 60:02d}:{second:02d}.{n % 999999:06d}Z"
        received = f"2026-12-07T10:{n // 60 % 60:02d}:{second:02d}.{n % 999999:06d}123Z"
        labels = {
            "authorization.k8s.io/decision": "forbid" if denied else "allow",
            "authorization.k8s.io/reason": "" if denied else "access granted by IAM permissions.",
        }
        payload: dict[str, Any] = {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "authenticationInfo": {"principalEmail": user},
            "authorizationInfo": [
                {"granted": not denied, "permission": method, "resource": resource_name}
            ],
            "methodName": method,
            "requestMetadata": {"callerIp": ip, "callerSuppliedUserAgent": agent},
            "resourceName": resource_name,
            "serviceName": "k8s.io",
            "status": {"code": 7, "message": "PERMISSION_DENIED"} if denied else {},
        }
        request = response = None
        if verb == "create" and not sub and not denied:
            request = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}}
            response = {**request, "status": {"phase": "Pending"}}
            payload["request"] = {"@type": "core.k8s.io/v1.Pod", **request}
            payload["response"] = {"@type": "core.k8s.io/v1.Pod", **response}
        entry = {
            "protoPayload": payload,
            "insertId": f"{audit_id}-i",
            "resource": {
                "type": "k8s_cluster",
                "labels": {
                    "project_id": PROJECT, "location": "europe-west1", "cluster_name": "prod-eu",
                },
            },
            "timestamp": timestamp,
            "labels": labels,
            "logName": f"projects/{PROJECT}/logs/cloudaudit.googleapis.com%2F"
            + ("data_access" if verb in ("get", "list", "watch") else "activity"),
            "operation": {"id": audit_id, "producer": "k8s.io", "first": True, "last": True},
            "receiveTimestamp": received,
        }  # fmt: skip
        prefix = "/api/" if group == "core" else f"/apis/{group}/"
        object_ref: dict[str, str] = {"resource": resource}
        if namespace:
            object_ref["namespace"] = namespace
        if name:
            object_ref["name"] = name
        if group != "core":
            object_ref["apiGroup"] = group
        object_ref["apiVersion"] = version
        if sub:
            object_ref["subresource"] = sub
        if denied:
            status: dict[str, Any] = {"metadata": {}, "status": "Failure"}
            status |= {"message": "PERMISSION_DENIED", "reason": "Forbidden", "code": 403}
        else:
            status = {
                "metadata": {},
                "code": 101 if sub == "exec" else 201 if verb == "create" else 200,
            }
        event: dict[str, Any] = {
            "kind": "Event", "apiVersion": "audit.k8s.io/v1",
            "level": "RequestResponse" if response else "Metadata",
            "auditID": audit_id, "stage": "ResponseComplete",
            "requestURI": prefix + "/".join(path[1:]) + ("?watch=true" if verb == "watch" else ""),
            "verb": verb, "user": {"username": user}, "sourceIPs": [ip], "userAgent": agent,
            "objectRef": object_ref, "responseStatus": status,
        }  # fmt: skip
        if request:
            event |= {"requestObject": request, "responseObject": response}
        event |= {
            "requestReceivedTimestamp": timestamp,
            "stageTimestamp": received[:-4] + "Z",
            "annotations": {**labels, "audit-relay/gke-cluster": f"{PROJECT}/europe-west1/prod-eu"},
        }  # fmt: skip
        made.append((orjson.dumps(entry), event))
    return made


def other_entries(count: int) -> list[bytes]:
    """Entries of other services a sink with a broad filter publishes too: GCE audit, and a
    container's log line (skipped by the source)."""
    made = []
    for n in range(count):
        if n % 2:
            entry: dict[str, Any] = {
                "insertId": f"gce-{n}",
                "logName": f"projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Factivity",
                "protoPayload": {
                    "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                    "serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.instances.start",
                    "resourceName": f"projects/{PROJECT}/zones/europe-west1-b/instances/vm-{n}",
                },
                "resource": {"type": "gce_instance", "labels": {"instance_id": str(n)}},
                "timestamp": "2026-12-07T10:00:00.000001Z",
            }
        else:
            entry = {
                "insertId": f"ctr-{n}",
                "logName": f"projects/{PROJECT}/logs/stdout",
                "textPayload": "GET /healthz 200",
                "resource": {"type": "k8s_container", "labels": {"cluster_name": "prod-eu"}},
                "timestamp": "2026-12-07T10:00:00.000001Z",
            }
        made.append(orjson.dumps(entry))
    return made


def as_log_entry(event: dict[str, Any], n: int) -> bytes:
    """An audit Event as GKE would log it (the reverse of the source's rebuild), for the bench:
    the same events, and sizes, as the other sources read."""
    ref = event["objectRef"]
    group, version = ref.get("apiGroup", "core"), ref.get("apiVersion", "v1")
    path = [group, version]
    path += ["namespaces", ref["namespace"]] if ref.get("namespace") else []
    path += [ref["resource"]] + ([ref["name"]] if ref.get("name") else [])
    path += [ref["subresource"]] if ref.get("subresource") else []
    dotted = ".".join(reversed(group.removesuffix(".k8s.io").split(".")))
    method = ".".join(p for p in ("io.k8s", dotted, version, ref["resource"],
                                  ref.get("subresource"), event["verb"]) if p)  # fmt: skip
    payload: dict[str, Any] = {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "authenticationInfo": {"principalEmail": event["user"].get("username", "")},
        "methodName": method,
        "requestMetadata": {
            "callerIp": event.get("sourceIPs", [""])[0],
            "callerSuppliedUserAgent": event.get("userAgent", ""),
        },
        "resourceName": "/".join(path),
        "serviceName": "k8s.io",
        "status": {} if event["responseStatus"].get("code", 200) < 400 else {"code": 7},
    }
    for field, key in (("requestObject", "request"), ("responseObject", "response")):
        if isinstance(event.get(field), dict):
            payload[key] = {"@type": f"{group}.k8s.io/{version}.Object", **event[field]}
    entry = {
        "protoPayload": payload,
        "insertId": f"{event['auditID']}-{n}",
        "resource": {"type": "k8s_cluster", "labels": {"cluster_name": "bench"}},
        "timestamp": event["requestReceivedTimestamp"],
        "labels": event.get("annotations", {}),
        "logName": f"projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Factivity",
        "operation": {"id": f"{event['auditID']}-{n}", "producer": "k8s.io"},
        "receiveTimestamp": event["stageTimestamp"],
    }
    return orjson.dumps(entry)
