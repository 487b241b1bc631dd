"""GKE's audit entries (Cloud Logging ``LogEntry``\\ s with an ``AuditLog`` payload) rebuilt into
``audit.k8s.io/v1`` Events. Pure logic; ``relay.sources.pubsub`` calls ``message_item`` on the
data of each Pub/Sub message a log sink published.

GKE keeps no copy of the apiserver's Event: its entries carry what Cloud Audit Logs' ``AuditLog``
holds (see README, "Managed clusters", for the fields that cannot be rebuilt). An entry looks
like (abridged)::

    {"insertId": "...", "logName": "projects/P/logs/cloudaudit.googleapis.com%2Factivity",
     "operation": {"id": "<audit ID>", "producer": "k8s.io", "first": true, "last": true},
     "resource": {"type": "k8s_cluster", "labels": {"project_id": P, "location": L,
                  "cluster_name": C}},
     "timestamp": "...", "receiveTimestamp": "...",
     "labels": {"authorization.k8s.io/decision": "allow", ...},
     "protoPayload": {"@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "serviceName": "k8s.io", "methodName": "io.k8s.core.v1.pods.create",
        "resourceName": "core/v1/namespaces/default/pods/web",
        "authenticationInfo": {"principalEmail": "..."},
        "requestMetadata": {"callerIp": "...", "callerSuppliedUserAgent": "..."},
        "status": {"code": 7, "message": "..."}, "request": {...}, "response": {...}}}
"""

from __future__ import annotations

from typing import Any

import orjson

AUDIT_LOG_TYPE = "type.googleapis.com/google.cloud.audit.AuditLog"
API_VERSION = "audit.k8s.io/v1"
# The annotation naming the GKE cluster of an entry (a sink may collect several clusters, while
# the record's cluster header is the source's --cluster).
CLUSTER_ANNOTATION = "audit-relay/gke-cluster"

# google.rpc.Code -> the HTTP status the apiserver answered (GKE logs only the former; the
# mapping is google.rpc's own, so 422 and 409 Conflict come back as 400 and 409 at best).
_HTTP_STATUS = {
    0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409,
    11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}  # fmt: skip
# The reason the apiserver gives in a failed Status, for the codes it answers with.
_REASON = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
           409: "AlreadyExists", 429: "TooManyRequests", 500: "InternalError",
           503: "ServiceUnavailable", 504: "Timeout"}  # fmt: skip
# Subresources whose success is an upgrade to a stream.
_STREAMS = frozenset({"exec", "attach", "portforward"})


class NotAnAuditEntry(ValueError):
    """A Kubernetes AuditLog entry that lacks what an Event needs (raised by ``rebuild``)."""


def message_item(data: bytes) -> bytes | None:
    """What the runner gets for one Pub/Sub message's data.

    The rebuilt Event's JSON (beginning with ``kind`` and ``apiVersion``, as an audit.log line)
    for a Kubernetes AuditLog entry; None for a LogEntry of anything else (skipped); the data as
    it is for anything that is not a LogEntry or a broken AuditLog entry: the runner's build path
    dead-letters it with its bytes.
    """
    try:
        entry = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    if not isinstance(entry, dict) or not isinstance(entry.get("logName"), str):
        return data
    if not is_kubernetes_audit(entry):
        return None
    try:
        return orjson.dumps(rebuild(entry))
    except NotAnAuditEntry:
        return data


def is_kubernetes_audit(entry: dict[str, Any]) -> bool:
    """Whether a LogEntry is a GKE cluster's Kubernetes audit entry."""
    payload = entry.get("protoPayload")
    resource = entry.get("resource")
    return (
        isinstance(payload, dict)
        and payload.get("@type") == AUDIT_LOG_TYPE
        and payload.get("serviceName") == "k8s.io"
        and isinstance(resource, dict)
        and resource.get("type") == "k8s_cluster"
    )


def rebuild(entry: dict[str, Any]) -> dict[str, Any]:
    """The ``audit.k8s.io/v1`` Event of a Kubernetes AuditLog entry, its keys in the order
    kube-apiserver writes them. Raises NotAnAuditEntry when a field it needs is missing."""
    payload: dict[str, Any] = entry["protoPayload"]
    method = _text(payload, "methodName")
    resource_name = _text(payload, "resourceName")
    timestamp = _micro(_text(entry, "timestamp"))
    received = _micro(entry["receiveTimestamp"]) if "receiveTimestamp" in entry else timestamp
    verb = method.rsplit(".", 1)[-1]
    object_ref = _object_ref(method, resource_name)
    request, response = _object(payload.get("request")), _object(payload.get("response"))
    operation = entry.get("operation") or {}
    audit_id = operation.get("id") or _text(entry, "insertId")
    metadata = payload.get("requestMetadata") or {}
    event: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": API_VERSION,
        "level": "RequestResponse" if response is not None else
                 "Request" if request is not None else "Metadata",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "requestURI": _request_uri(resource_name, verb),
        "verb": verb,
        "user": {"username": (payload.get("authenticationInfo") or {}).get("principalEmail", "")},
    }  # fmt: skip
    if metadata.get("callerIp"):
        event["sourceIPs"] = [metadata["callerIp"]]
    if metadata.get("callerSuppliedUserAgent"):
        event["userAgent"] = metadata["callerSuppliedUserAgent"]
    if object_ref:
        event["objectRef"] = object_ref
    subresource = (object_ref or {}).get("subresource", "")
    event["responseStatus"] = _response_status(payload.get("status") or {}, verb, subresource)
    if request is not None:
        event["requestObject"] = request
    if response is not None:
        event["responseObject"] = response
    event["requestReceivedTimestamp"] = timestamp
    event["stageTimestamp"] = received
    annotations = {k: v for k, v in (entry.get("labels") or {}).items() if isinstance(v, str)}
    labels = entry["resource"].get("labels") or {}
    if labels.get("cluster_name"):
        annotations[CLUSTER_ANNOTATION] = "/".join(
            labels.get(key, "") for key in ("project_id", "location", "cluster_name")
        )
    if annotations:
        event["annotations"] = annotations
    return event


def _text(mapping: dict[str, Any], key: str) -> str:
    value = mapping.get(key)
    if not isinstance(value, str) or not value:
        raise NotAnAuditEntry(f"{key} missing")
    return value


def _micro(text: str) -> str:
    """An RFC 3339 time with nanoseconds (Cloud Logging's) as the apiserver writes its
    timestamps: UTC, microseconds."""
    if not text.endswith("Z") or len(text) < 20 or text[10] != "T":
        raise NotAnAuditEntry(f"timestamp {text!r} is not an RFC 3339 UTC time")
    seconds, _, fraction = text[:-1].partition(".")
    if not fraction.isdigit() and fraction:
        raise NotAnAuditEntry(f"timestamp {text!r} is not an RFC 3339 UTC time")
    return f"{seconds}.{fraction[:6].ljust(6, '0')}Z"


def _object_ref(method: str, resource_name: str) -> dict[str, str] | None:
    """resource, namespace, name, apiGroup, apiVersion and subresource of a request.

    ``resourceName`` is ``GROUP/VERSION/[namespaces/NS/]RESOURCE[/NAME[/SUBRESOURCE]]`` (GROUP
    ``core`` for the legacy group); ``methodName`` is ``io.k8s.GROUP.VERSION.RESOURCE
    [.SUBRESOURCE].VERB`` and tells which part is the resource (``namespaces/NS/status`` is the
    status of namespace NS, ``namespaces/NS/pods`` the pods in NS). None for a non-resource
    request (``/healthz``) or a name neither explains.
    """
    parts = resource_name.strip("/").split("/")
    if len(parts) < 3:
        return None
    group, version, path = parts[0], parts[1], parts[2:]
    tokens = method.split(".")
    if version not in tokens[:-1]:
        return None
    named = tokens[len(tokens) - tokens[-2::-1].index(version) - 1 : -1]
    if not named:
        return None
    resource = named[0]
    namespace = ""
    if resource != "namespaces" and len(path) >= 3 and path[0] == "namespaces":
        namespace, path = path[1], path[2:]
    if path[0] != resource:
        return None
    ref = {"resource": resource}
    if namespace:
        ref["namespace"] = namespace
    if len(path) > 1:
        ref["name"] = path[1]
    if group != "core":
        ref["apiGroup"] = group
    ref["apiVersion"] = version
    subresource = named[1] if len(named) > 1 else path[2] if len(path) > 2 else ""
    if subresource:
        ref["subresource"] = subresource
    return ref


def _request_uri(resource_name: str, verb: str) -> str:
    """The request's path as the apiserver serves it (``/api/v1/...`` for the core group,
    ``/apis/GROUP/VERSION/...`` for the others); GKE keeps no query string, so a watch's is
    ``?watch=true`` and a list's selectors are lost."""
    name = resource_name.strip("/")
    parts = name.split("/")
    if len(parts) < 3 or not parts[1].startswith("v"):
        return "/" + name
    prefix = "/api/" if parts[0] == "core" else f"/apis/{parts[0]}/"
    uri = prefix + "/".join(parts[1:])
    return uri + "?watch=true" if verb == "watch" else uri


def _response_status(status: dict[str, Any], verb: str, subresource: str) -> dict[str, Any]:
    """metav1.Status from the entry's google.rpc.Status: the HTTP code by google.rpc's mapping.
    A success is inferred as the apiserver answers it (not in the entry): 101 for a stream
    (exec, attach, portforward), 201 for a create, 200 otherwise."""
    code = status.get("code", 0)
    if not isinstance(code, int):
        raise NotAnAuditEntry(f"status code {code!r} is not a number")
    if code == 0:
        ok = 101 if subresource in _STREAMS else 201 if verb == "create" else 200
        return {"metadata": {}, "code": ok}
    http = _HTTP_STATUS.get(code, 500)
    result: dict[str, Any] = {"metadata": {}, "status": "Failure"}
    if status.get("message"):
        result["message"] = status["message"]
    if http in _REASON:
        result["reason"] = _REASON[http]
    result["code"] = http
    return result


def _object(value: Any) -> dict[str, Any] | None:
    """A request or response object without the ``@type`` Cloud Logging adds."""
    if not isinstance(value, dict):
        return None
    return {k: v for k, v in value.items() if k != "@type"}
