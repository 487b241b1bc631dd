"""What kube-apiserver writes for one request under an audit policy, for tests that need events
of a given shape: the policy's first matching rule gives the level and the stages it omits, the
request's kind gives its stages, and the level decides which bodies each stage event carries.

Written from the apiserver's audit code: ``policy/checker.go`` (first match wins; an empty list
matches everything; ``*`` suffixes in nonResourceURLs; ``*``, ``*/sub`` and ``res/*`` resources;
resourceNames), ``endpoints/filters/audit.go`` (RequestReceived before the handler; a
ResponseStarted event only for long-running requests, when their headers are written;
ResponseComplete at the end) and ``audit/request.go`` (requestObject from level Request,
responseObject at RequestResponse, managedFields left out under omitManagedFields).
"""

from __future__ import annotations

import copy
import fnmatch
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from tests.support.kafka import REPO

POLICY_FILE = REPO / "deploy" / "apiserver" / "audit-policy.yaml"
LEVELS = ("None", "Metadata", "Request", "RequestResponse")
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete")
# kube-apiserver's LongRunningFunc: these verbs and subresources hold their connection open.
LONG_RUNNING_VERBS = frozenset({"watch", "proxy"})
LONG_RUNNING_SUBRESOURCES = frozenset({"attach", "exec", "proxy", "log", "portforward"})
_START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
_REASONS = {403: "Forbidden", 404: "NotFound", 409: "AlreadyExists", 422: "Invalid"}

Event = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """One request to kube-apiserver: who asked what, and what it answered.

    ``resource`` is written as the policy writes it, ``pods`` or ``pods/exec``; empty for a
    non-resource URL, which is then ``path``. ``body`` is the request object the handler
    decoded, ``response`` the object it answered with.
    """

    user: str
    verb: str
    resource: str = ""
    group: str = ""
    namespace: str = ""
    path: str = ""
    groups: tuple[str, ...] = ("system:authenticated",)
    name: str = ""
    query: str = ""
    body: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    code: int = 200
    allowed: bool = True
    version: str = "v1"
    user_agent: str = "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46"
    source_ip: str = "10.0.3.7"
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def subresource(self) -> str:
        return self.resource.partition("/")[2]

    @property
    def long_running(self) -> bool:
        return self.verb in LONG_RUNNING_VERBS or self.subresource in LONG_RUNNING_SUBRESOURCES

    @property
    def uri(self) -> str:
        if not self.resource:
            return self.path
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [prefix]
        if self.namespace:
            parts.append(f"namespaces/{self.namespace}")
        base, _, subresource = self.resource.partition("/")
        parts.append(base)
        if self.name and (self.verb != "create" or subresource):  # create posts to the list
            parts.append(self.name)
        if subresource:
            parts.append(subresource)
        uri = self.path or "/".join(parts)
        return f"{uri}?{self.query}" if self.query else uri


def _matches(rule: dict[str, Any], request: Request) -> bool:
    if rule.get("users") and request.user not in rule["users"]:
        return False
    if rule.get("userGroups") and not set(rule["userGroups"]) & set(request.groups):
        return False
    if rule.get("verbs") and request.verb not in rule["verbs"]:
        return False
    if not request.resource:
        if rule.get("resources") or rule.get("namespaces"):
            return False
        urls = rule.get("nonResourceURLs")
        return not urls or any(
            url == request.path or (url.endswith("*") and request.path.startswith(url[:-1]))
            for url in urls
        )
    if rule.get("nonResourceURLs"):
        return False
    if rule.get("namespaces") and request.namespace not in rule["namespaces"]:
        return False
    if not rule.get("resources"):
        return True
    return any(
        entry.get("group", "") == request.group
        and (not entry.get("resourceNames") or request.name in entry["resourceNames"])
        and (
            not entry.get("resources")
            or any(fnmatch.fnmatchcase(request.resource, name) for name in entry["resources"])
        )
        for entry in rule["resources"]
    )


@dataclass(frozen=True)
class Decision:
    """What the policy decided for a request: its level, and the stages not sent."""

    level: str
    omit_stages: frozenset[str]
    omit_managed_fields: bool


@dataclass(frozen=True)
class AuditPolicy:
    """An ``audit.k8s.io/v1`` Policy document, evaluated as kube-apiserver evaluates it."""

    document: dict[str, Any]

    @classmethod
    def load(cls, path: Path = POLICY_FILE) -> AuditPolicy:
        return cls(yaml.safe_load(path.read_text()))

    @classmethod
    def everything(cls, level: str = "RequestResponse") -> AuditPolicy:
        """Every request at ``level`` and every stage but RequestReceived: what a broad policy
        writes, the shape of most recorded traces."""
        return cls({"omitStages": ["RequestReceived"], "rules": [{"level": level}]})

    def decide(self, request: Request) -> Decision:
        omitted = frozenset(self.document.get("omitStages", ()))
        omit_fields = bool(self.document.get("omitManagedFields", False))
        for rule in self.document.get("rules", ()):
            if _matches(rule, request):
                return Decision(
                    str(rule["level"]),
                    omitted | frozenset(rule.get("omitStages", ())),
                    bool(rule.get("omitManagedFields", omit_fields)),
                )
        return Decision("None", omitted, omit_fields)

    def audit(
        self, request: Request, *, audit_id: str | None = None, at: datetime = _START
    ) -> list[Event]:
        """The events the apiserver sends for ``request``, in stage order; none at level None.

        ``audit_id`` defaults to one derived from the request, so equal requests give equal
        events; ``at`` is when the request arrives.
        """
        decision = self.decide(request)
        if decision.level == "None":
            return []
        stages = [
            stage
            for stage in STAGES
            if stage not in decision.omit_stages
            and (stage != "ResponseStarted" or request.long_running)
        ]
        audit_id = audit_id or str(uuid.uuid5(uuid.NAMESPACE_URL, repr(request)))
        return [
            _event(request, decision, stage, audit_id, at, at + timedelta(milliseconds=n * 20))
            for n, stage in enumerate(stages, start=1)
        ]


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _logged(body: dict[str, Any], decision: Decision) -> dict[str, Any]:
    body = copy.deepcopy(body)
    metadata = body.get("metadata")
    if decision.omit_managed_fields and isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    return body


def _event(
    request: Request,
    decision: Decision,
    stage: str,
    audit_id: str,
    received: datetime,
    staged: datetime,
) -> Event:
    level = LEVELS.index(decision.level)
    event: Event = {
        "level": decision.level,
        "auditID": audit_id,
        "stage": stage,
        "requestURI": request.uri,
        "verb": request.verb,
        "user": {"username": request.user, "groups": list(request.groups)},
        "sourceIPs": [request.source_ip],
        "userAgent": request.user_agent,
    }
    if request.resource:
        base, _, subresource = request.resource.partition("/")
        ref = {"resource": base, "namespace": request.namespace, "name": request.name}
        ref = {key: value for key, value in ref.items() if value}
        if subresource:
            ref["subresource"] = subresource
        if request.group:
            ref["apiGroup"] = request.group
        ref["apiVersion"] = request.version
        event["objectRef"] = ref
    if stage != "RequestReceived":
        status: dict[str, Any] = {"metadata": {}, "code": request.code}
        if request.code >= 400:
            status.update(status="Failure", reason=_REASONS.get(request.code, "BadRequest"))
        event["responseStatus"] = status
        # The handler decodes the body only once the request is authorized.
        if request.body is not None and request.allowed and level >= LEVELS.index("Request"):
            event["requestObject"] = _logged(request.body, decision)
    if stage == "ResponseComplete" and request.response is not None and decision.level == LEVELS[3]:
        event["responseObject"] = _logged(request.response, decision)
    event["requestReceivedTimestamp"] = _stamp(received)
    event["stageTimestamp"] = _stamp(received if stage == "RequestReceived" else staged)
    if stage != "RequestReceived":
        decision_text = "allow" if request.allowed else "forbid"
        event["annotations"] = {"authorization.k8s.io/decision": decision_text}
        event["annotations"]["authorization.k8s.io/reason"] = (
            'RBAC: allowed by ClusterRoleBinding "edit" of ClusterRole "edit"'
            if request.allowed
            else ""
        )
        event["annotations"].update(request.annotations)
    return event
