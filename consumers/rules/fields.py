"""The fields of Falco's k8saudit plugin (``ka.*``) and of the json plugin (``jevt.*``) that
Falco's Kubernetes audit rules read, with the plugins' semantics.

``bind_field(name, arg)`` is called once per field reference when a rules file is compiled
(``consumers.rules.condition``); the ``BoundField`` it returns extracts, for every event, the
field's values as a list: ``[]`` is Falco's ``<NA>`` (the value is not in the event), a
non-list field gives at most one value. Every ``ka.*`` field is of type string in the plugin,
whatever JSON it reads: booleans and numbers come out as their JSON text (``"true"``,
``"0"``), objects as compact JSON text; no default is filled in unless the plugin does.

This module holds the fields of the event's envelope (user, verb, URI, target, response,
annotations); those reading a pod in the request object are in ``fields_pods``, other request
objects in ``fields_objects``, the ``jevt.*`` fields in ``fields_jevt``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from audit_common.errors import RulesError
from consumers.rules.fields_base import (
    Arg,
    Extract,
    FieldDef,
    FieldType,
    Value,
    listed,
    plain,
    scalar,
    text,
)
from consumers.rules.fields_jevt import JEVT_FIELDS, parse_pointer
from consumers.rules.fields_objects import OBJECT_FIELDS
from consumers.rules.fields_pods import POD_FIELDS

__all__ = ["FIELDS", "BoundField", "FieldDef", "Value", "bind_field", "is_field_name"]


@dataclass(frozen=True, slots=True)
class BoundField:
    """A field reference of a rule (``ka.req.pod.containers.image[0]``), bound once when the
    rules are compiled; the compiled condition and the output formatter call ``extract(event)``
    for every event (``[]``: the value is missing, Falco's ``<NA>``)."""

    text: str
    name: str
    arg: str | None
    type: FieldType
    is_list: bool
    extract: Extract


@lru_cache(maxsize=256)
def _query(uri: str) -> dict[str, str]:
    """The first value of each query parameter of ``uri``; cached, as several rules and outputs
    read the parameters of the same event."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(urlsplit(uri).query, keep_blank_values=True):
        params.setdefault(name, value)
    return params


def _uri_param(arg: Arg) -> Extract:
    # The plugin parses the URI with Go's url.Parse and url.ParseQuery and answers the first
    # value of the key ("" for ``?watch``); where Go refuses a malformed query (a bad %-escape,
    # a ``;``) the plugin fails the extraction, parse_qsl keeps such text as it is.
    key = str(arg)

    def extract(event: Mapping[str, Any]) -> list[Value]:
        uri = event.get("requestURI")
        if not isinstance(uri, str) or "?" not in uri or "auditID" not in event:
            return []
        value = _query(uri).get(key)
        return [] if value is None else [value]

    return extract


def _has_name(_arg: Arg) -> Extract:
    # Documented as "always N/A", but the plugin (like Falco's original implementation) answers
    # "true" for every audit event; the code's behaviour is what rules have been tested against.
    def extract(event: Mapping[str, Any]) -> list[Value]:
        return ["true"] if "auditID" in event else []

    return extract


def _target_pod(event: Mapping[str, Any]) -> list[Value]:
    # Added to the plugin after the version read for this work, documented only as "the target
    # pod name": the target's name when the target is a pod (or one of its subresources).
    ref = event.get("objectRef")
    if "auditID" not in event or not isinstance(ref, dict) or ref.get("resource") != "pods":
        return []
    name = ref.get("name")
    return [] if name is None else [text(name)]


def _source_ips(arg: Arg) -> Extract:
    # Documented: the event's sourceIPs, or the one at the index. The plugin version read for
    # this work looks under requestObject.rules instead and so never answers (falcosecurity/
    # plugins issue 236); the documented meaning is followed.
    index = arg if isinstance(arg, int) else None

    def extract(event: Mapping[str, Any]) -> list[Value]:
        ips = event.get("sourceIPs")
        if not isinstance(ips, list) or "auditID" not in event:
            return []
        if index is None:
            return [text(ip) for ip in ips]
        return [text(ips[index])] if index < len(ips) else []

    return extract


_ENVELOPE_FIELDS = (
    plain("ka.auditid", "The unique id of the audit event", scalar("auditID")),
    plain(
        "ka.stage",
        "Stage of the request (e.g. RequestReceived, ResponseComplete, etc.)",
        scalar("stage"),
    ),
    plain(
        "ka.auth.decision",
        "The authorization decision",
        scalar("annotations", "authorization.k8s.io/decision"),
    ),
    plain(
        "ka.auth.reason",
        "The authorization reason",
        scalar("annotations", "authorization.k8s.io/reason"),
    ),
    plain(
        "ka.auth.openshift.decision",
        "The authentication decision of the openshfit apiserver extention. Only available on "
        "openshift clusters",
        scalar("annotations", "authentication.openshift.io/decision"),
    ),
    plain(
        "ka.auth.openshift.username",
        "The user name performing the openshift authentication operation. Only available on "
        "openshift clusters",
        scalar("annotations", "authentication.openshift.io/username"),
    ),
    plain(
        "ka.validations.admission.policy.failure",
        "The validation failure reason from a Validation Admission Policy",
        scalar("annotations", "validation.policy.admission.k8s.io/validation_failure"),
    ),
    plain(
        "ka.security.pod.violations",
        "The violation reason for pod security policy",
        scalar("annotations", "pod-security.kubernetes.io/audit-violations"),
    ),
    plain("ka.user.name", "The user name performing the request", scalar("user", "username")),
    plain(
        "ka.user.groups",
        "The groups to which the user belongs",
        listed("user", "groups"),
        is_list=True,
    ),
    plain(
        "ka.impuser.name",
        "The impersonated user name",
        scalar("impersonatedUser", "username"),
    ),
    plain("ka.verb", "The action being performed", scalar("verb")),
    plain("ka.uri", "The request URI as sent from client to server", scalar("requestURI")),
    FieldDef(
        "ka.uri.param",
        "string",
        False,
        "key",
        True,
        "The value of a given query parameter in the uri (e.g. when uri=/foo?key=val, "
        "ka.uri.param[key] is val).",
        _uri_param,
    ),
    plain("ka.target.name", "The target object name", scalar("objectRef", "name")),
    plain("ka.target.namespace", "The target object namespace", scalar("objectRef", "namespace")),
    plain("ka.target.resource", "The target object resource", scalar("objectRef", "resource")),
    plain(
        "ka.target.subresource",
        "The target object subresource",
        scalar("objectRef", "subresource"),
    ),
    plain("ka.target.pod.name", "The target pod name", _target_pod),
    FieldDef(
        "ka.req.binding.subject.has_name",
        "string",
        False,
        "key",
        True,
        'Deprecated, always returns "N/A". Only provided for backwards compatibility',
        _has_name,
    ),
    plain("ka.resp.name", "The response object name", scalar("responseObject", "metadata", "name")),
    plain("ka.response.code", "The response code", scalar("responseStatus", "code")),
    plain(
        "ka.response.reason",
        "The response reason (usually present only for failures)",
        scalar("responseStatus", "reason"),
    ),
    plain(
        "ka.useragent",
        "The useragent of the client who made the request to the apiserver",
        scalar("userAgent"),
    ),
    FieldDef(
        "ka.sourceips",
        "string",
        True,
        "index",
        False,
        "The IP addresses of the client who made the request to the apiserver",
        _source_ips,
    ),
    # Documented only as "the name of the k8s cluster"; the plugins that know it (k8saudit-gke)
    # put it in the annotation cluster_name, which is what is read.
    plain("ka.cluster.name", "The name of the k8s cluster", scalar("annotations", "cluster_name")),
)

FIELDS: Mapping[str, FieldDef] = {
    field.name: field for field in (*_ENVELOPE_FIELDS, *OBJECT_FIELDS, *POD_FIELDS, *JEVT_FIELDS)
}


def is_field_name(name: str) -> bool:
    """Whether ``name`` (without argument) is a field; the condition parser asks, to tell a
    field from a bare value."""
    return name in FIELDS


def bind_field(name: str, arg: str | None) -> BoundField:
    """The field ``name`` with its argument (``arg``: the text between the brackets, None
    without brackets), checked and bound once; called by the rules compiler for every field
    reference of a condition or output. Raises RulesError naming the field when the field is
    unknown, or its argument is missing, not allowed or malformed."""
    field = FIELDS.get(name)
    written = name if arg is None else f"{name}[{arg}]"
    if field is None:
        raise RulesError(f"unknown field {name!r}")
    parsed: Arg
    if field.arg == "none":
        if arg is not None:
            raise RulesError(f"field {name!r} takes no argument: {written!r}")
        parsed = None
    elif arg is None:
        if field.arg_required:
            raise RulesError(f"field {name!r} requires an argument ({field.arg}): {written!r}")
        parsed = None
    elif arg == "":
        raise RulesError(f"field {name!r} has an empty argument: {written!r}")
    elif field.arg == "index":
        if not (arg.isascii() and arg.isdigit()):
            raise RulesError(f"field {name!r} takes an index argument, not {arg!r}")
        parsed = int(arg)
    elif field.arg == "pointer":
        parsed = parse_pointer(arg)
    else:
        parsed = arg
    return BoundField(written, name, arg, field.type, field.is_list, field.build(parsed))
