from __future__ import annotations

from typing import Any

import orjson
import pytest

from audit_common.errors import ConfigError
from consumers.events import ConsumedEvent, decode
from consumers.filters import EventFilter, parse_rule
from tests.support.events import audit_events

NOISE = "verb=get|list|watch,user=system:*"
CHANGES = (
    "verb=create|update|patch|delete|deletecollection,"
    "resource=secrets|roles|rolebindings|clusterroles|clusterrolebindings"
)


def event(cluster: str | None = "prod", **fields: Any) -> ConsumedEvent:
    data = {"auditID": "a", **fields}
    headers = [("cluster", cluster.encode())] if cluster else []
    return decode(orjson.dumps(data), headers, topic="t", partition=0, offset=0)


def test_drop_reads_by_system_users() -> None:
    event_filter = EventFilter.parse([], [NOISE])
    watch = event(verb="watch", user={"username": "system:kube-scheduler"})
    human_watch = event(verb="watch", user={"username": "alice"})
    system_write = event(verb="update", user={"username": "system:node:n1"})
    assert not event_filter.accepts(watch)
    assert event_filter.accepts(human_watch)
    assert event_filter.accepts(system_write)


def test_keep_only_changes_to_secrets_roles_and_bindings() -> None:
    event_filter = EventFilter.parse([CHANGES], [])
    kept = [
        event(verb="delete", objectRef={"resource": "secrets"}),
        event(verb="create", objectRef={"resource": "clusterrolebindings"}),
        event(verb="patch", objectRef={"resource": "roles"}),
    ]
    dropped = [
        event(verb="get", objectRef={"resource": "secrets"}),
        event(verb="create", objectRef={"resource": "pods"}),
        event(verb="create"),  # no objectRef: a missing field matches nothing
    ]
    assert all(event_filter.accepts(e) for e in kept)
    assert not any(event_filter.accepts(e) for e in dropped)


def test_group_matches_any_of_the_users_groups() -> None:
    event_filter = EventFilter.parse([], ["group=system:serviceaccounts:kube-*"])
    in_group = event(user={"username": "sa", "groups": ["x", "system:serviceaccounts:kube-system"]})
    other = event(user={"username": "sa", "groups": ["system:authenticated"]})
    assert not event_filter.accepts(in_group)
    assert event_filter.accepts(other)


@pytest.mark.parametrize(
    ("rule", "fields", "cluster", "matches"),
    [
        ("namespace=kube-*", {"objectRef": {"namespace": "kube-system"}}, "c", True),
        ("namespace=kube-*", {"objectRef": {"namespace": "default"}}, "c", False),
        ("stage=ResponseComplete", {"stage": "ResponseComplete"}, "c", True),
        ("stage=ResponseComplete", {"stage": "RequestReceived"}, "c", False),
        ("level=Request*", {"level": "RequestResponse"}, "c", True),
        ("level=Request*", {"level": "Metadata"}, "c", False),
        ("cluster=prod-*", {}, "prod-eu", True),
        ("cluster=prod-*", {}, None, False),
        ("code=4*|5*", {"responseStatus": {"code": 403}}, "c", True),
        ("code=4*|5*", {"responseStatus": {"code": 201}}, "c", False),
        ("verb=GET", {"verb": "get"}, "c", False),  # case-sensitive, as Kubernetes names are
    ],
)
def test_each_field(rule: str, fields: dict[str, Any], cluster: str | None, matches: bool) -> None:
    assert parse_rule(rule).matches(event(cluster, **fields)) is matches


def test_include_and_exclude_combine() -> None:
    event_filter = EventFilter.parse(["resource=secrets"], ["namespace=kube-system"])
    assert event_filter.accepts(event(objectRef={"resource": "secrets", "namespace": "app"}))
    assert not event_filter.accepts(
        event(objectRef={"resource": "secrets", "namespace": "kube-system"})
    )
    assert not event_filter.accepts(event(objectRef={"resource": "pods", "namespace": "app"}))


def test_no_rules_accept_every_event() -> None:
    events = [decode(orjson.dumps(e), [], topic="t", partition=0, offset=0) for e in audit_events()]
    assert all(EventFilter().accepts(e) for e in events)


@pytest.mark.parametrize("rule", ["verb", "verb=", "colour=red", "verb=get,", "=get"])
def test_malformed_rules_are_config_errors(rule: str) -> None:
    with pytest.raises(ConfigError, match="FIELD=GLOB"):
        parse_rule(rule)
