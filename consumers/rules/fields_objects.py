"""The k8saudit fields that read the request object of a role or cluster role, a (cluster) role
binding, a service or a configmap."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consumers.rules.fields_base import (
    Arg,
    Build,
    Extract,
    FieldDef,
    Value,
    along,
    index_of,
    indexed,
    listed,
    lookup,
    plain,
    scalar,
    spread,
    text,
)

_SPEC = ("requestObject", "spec")
_RULES = ("requestObject", "rules")
_SUBJECTS = ("requestObject", "subjects")
_BINDING = "When the request object refers to a cluster role binding, the"
_ROLE = "When the request object refers to a role/cluster role, the"


def _rules_attr(key: str) -> Build:
    path = (*_RULES, key)

    def build(arg: Arg) -> Extract:
        index = index_of(arg)

        def extract(event: Mapping[str, Any]) -> list[Value]:
            if "auditID" not in event:
                return []
            found = spread(event, path, index)
            if found is None:
                return []
            return [text(item) for value in found if isinstance(value, list) for item in value]

        return extract

    return build


def _subject_names(kind: str, *, namespaced: bool = False) -> Extract:
    # Not in the plugin version read for this work: the documented meaning, the names of the
    # subjects of that kind, "namespace:name" for namespaced service accounts.
    def extract(event: Mapping[str, Any]) -> list[Value]:
        if "auditID" not in event:
            return []
        subjects = lookup(event, _SUBJECTS)
        if not isinstance(subjects, list):
            return []
        names: list[Value] = []
        for subject in subjects:
            if not isinstance(subject, dict) or subject.get("kind") != kind:
                continue
            name = subject.get("name")
            if name is None:
                continue
            if namespaced:
                names.append(f"{text(subject.get('namespace', ''))}:{text(name)}")
            else:
                names.append(text(name))
        return names

    return extract


OBJECT_FIELDS: tuple[FieldDef, ...] = (
    plain(
        "ka.req.binding.subjects",
        f"{_BINDING} subject (e.g. account/users) being linked by the binding",
        listed(*_SUBJECTS),
        is_list=True,
    ),
    plain(
        "ka.req.binding.subjects.user_names",
        f"{_BINDING} subject user names being linked by the binding",
        _subject_names("User"),
        is_list=True,
    ),
    plain(
        "ka.req.binding.subjects.serviceaccount_names",
        f"{_BINDING} subject service account names being linked by the binding",
        _subject_names("ServiceAccount"),
        is_list=True,
    ),
    plain(
        "ka.req.binding.subjects.serviceaccount_ns_names",
        f"{_BINDING} subject serviceaccount namespaced names being linked by the binding, e.g. "
        "a list containing: mynamespace:myserviceaccount",
        _subject_names("ServiceAccount", namespaced=True),
        is_list=True,
    ),
    plain(
        "ka.req.binding.subjects.group_names",
        f"{_BINDING} subject group names being linked by the binding",
        _subject_names("Group"),
        is_list=True,
    ),
    plain(
        "ka.req.binding.role",
        f"{_BINDING} role being linked by the binding",
        scalar("requestObject", "roleRef", "name"),
    ),
    # The plugin reads the configmap's name from objectRef, and its "entire object" is its data.
    plain(
        "ka.req.configmap.name",
        "If the request object refers to a configmap, the configmap name",
        scalar("objectRef", "name"),
    ),
    plain(
        "ka.req.configmap.obj",
        "If the request object refers to a configmap, the entire configmap object",
        scalar("requestObject", "data"),
    ),
    plain(
        "ka.req.role.rules",
        f"{_ROLE} rules associated with the role",
        listed(*_RULES),
        is_list=True,
    ),
    *(
        indexed(
            f"ka.req.role.rules.{key}",
            f"{_ROLE} {noun} associated with the role's rules",
            _rules_attr(key),
        )
        for key, noun in (
            ("apiGroups", "api groups"),
            ("nonResourceURLs", "non resource urls"),
            ("verbs", "verbs"),
            ("resources", "resources"),
        )
    ),
    plain(
        "ka.req.service.type",
        "When the request object refers to a service, the service type",
        scalar(*_SPEC, "type"),
    ),
    # The plugin's extractor gives the service's whole ports array as one JSON text (an index
    # selects nothing inside it, as no array comes before "ports" on the path).
    indexed(
        "ka.req.service.ports",
        "When the request object refers to a service, the service's ports",
        along(*_SPEC, "ports"),
    ),
)
