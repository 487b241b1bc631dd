"""Redaction of Secret contents and tokens (relay/redact.py): pure logic, no broker."""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import hmac
import json
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_common.errors import ConfigError
from audit_common.options import EnvArgumentParser
from relay.events.clearance import clear
from relay.events.redact import (
    LAST_APPLIED,
    MARKER_PREFIX,
    REDACTED_ANNOTATION,
    Redactor,
    add_redaction_arguments,
    redaction_settings_from_args,
)
from tests.support.corpus import corpus_events, corpus_file_events

KEY = b"k" * 32
SECRET_FILES = (
    "create_secret.json",
    "create_kube_system_secret.json",
    "create_service_account_token_secret.json",
    "delete_secret.json",
)
PLAIN = {"password": "hunter2-plain-value", "token": "tok-3f9a7c1e5d"}
ENCODED = {k: base64.b64encode(v.encode()).decode() for k, v in PLAIN.items()}


def secret_object(**extra: Any) -> dict[str, Any]:
    applied = {"apiVersion": "v1", "kind": "Secret", "data": ENCODED, "stringData": PLAIN}
    return {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {
            "name": "example-secret",
            "annotations": {LAST_APPLIED: orjson.dumps(applied).decode() + "\n"},
        },
        "type": "Opaque",
        "data": dict(ENCODED),
        "stringData": dict(PLAIN),
        **extra,
    }


def at_request_level(event: dict[str, Any]) -> dict[str, Any]:
    """A corpus Secret event as the apiserver logs it under a RequestResponse policy."""
    event = copy.deepcopy(event)
    event["level"] = "RequestResponse"
    if event["verb"] != "delete":
        event["requestObject"] = secret_object()
    event["responseObject"] = secret_object()
    return event


def assert_no_secret(event: dict[str, Any]) -> None:
    serialized = orjson.dumps(event)
    for value in (*PLAIN.values(), *ENCODED.values()):
        assert value.encode() not in serialized, value
        # The values inside last-applied-configuration are JSON-escaped once more.
        assert orjson.dumps(value)[1:-1] not in serialized


def redacted(event: dict[str, Any], **kwargs: Any) -> tuple[dict[str, Any], bool]:
    event = copy.deepcopy(event)
    return event, Redactor(KEY, **kwargs).redact(event)


@pytest.mark.parametrize("name", SECRET_FILES)
def test_corpus_secret_events_at_request_level_keep_no_secret_value(name: str) -> None:
    (original,) = corpus_file_events(name)
    event, changed = redacted(at_request_level(original))
    assert changed
    assert_no_secret(event)
    assert event["annotations"][REDACTED_ANNOTATION] == "true"
    assert event["annotations"]["authorization.k8s.io/decision"] == "allow"
    response = event["responseObject"]
    assert set(response["data"]) == set(ENCODED)
    assert all(value.startswith(MARKER_PREFIX) for value in response["data"].values())
    assert response["metadata"]["name"] == "example-secret"
    applied = orjson.loads(response["metadata"]["annotations"][LAST_APPLIED])
    assert applied["data"] == response["data"]
    assert response["metadata"]["annotations"][LAST_APPLIED].endswith("\n")


@pytest.mark.parametrize("name", SECRET_FILES)
def test_corpus_secret_events_at_metadata_level_pass_unchanged(name: str) -> None:
    (original,) = corpus_file_events(name)
    event, changed = redacted(original)
    assert not changed
    assert event == original


def test_no_corpus_event_is_changed_without_secrets() -> None:
    for original in corpus_events():
        event, changed = redacted(original)
        assert not changed, original["auditID"]
        assert event == original


def test_sensitive_configmaps_are_redacted_when_asked() -> None:
    events = corpus_file_events("create_configmap_sensitive_values.json")
    assert len(events) == 6
    for original in events:
        assert b"MY-KEY" in orjson.dumps(original)
        untouched, changed = redacted(original)
        assert not changed and untouched == original
        event, changed = redacted(original, resources={"secrets", "configmaps"})
        assert changed
        assert b"MY-KEY" not in orjson.dumps(event)
        assert event["requestObject"]["data"] == event["responseObject"]["data"]
        assert event["requestObject"]["metadata"] == original["requestObject"]["metadata"]


def test_equal_values_give_equal_markers_and_the_marker_is_an_hmac() -> None:
    event, _ = redacted(at_request_level(corpus_file_events("create_secret.json")[0]))
    data = event["responseObject"]["data"]
    expected = hmac.new(KEY, ENCODED["password"].encode(), hashlib.sha256).hexdigest()
    assert data["password"] == MARKER_PREFIX + expected
    assert event["requestObject"]["data"]["password"] == data["password"]
    assert event["requestObject"]["stringData"]["password"] != data["password"]
    assert Redactor(b"x" * 32).marker("a") != Redactor(KEY).marker("a")


def test_secret_lists_tables_and_watch_events() -> None:
    secret = secret_object()
    del secret["kind"]  # items of a typed list carry no kind
    event = {
        "verb": "list",
        "objectRef": {"resource": "secrets", "namespace": "default"},
        "responseObject": {"kind": "SecretList", "items": [secret, copy.deepcopy(secret), 7]},
    }
    result, changed = redacted(event)
    assert changed
    assert_no_secret(result)
    table = {"kind": "Table", "rows": [{"cells": ["x"], "object": secret_object()}]}
    watch = {"type": "ADDED", "object": secret_object()}
    for body in (table, watch):
        result, changed = redacted({"objectRef": {"resource": "secrets"}, "responseObject": body})
        assert changed
        assert_no_secret(result)


def test_a_secret_is_found_by_kind_whatever_the_resource() -> None:
    event = {"objectRef": {"resource": "foos"}, "requestObject": {"kind": "List"}}
    event["requestObject"]["items"] = [secret_object(), {"kind": "ConfigMap", "data": {"a": "b"}}]
    result, changed = redacted(event)
    assert changed
    assert_no_secret(result)
    assert result["requestObject"]["items"][1]["data"] == {"a": "b"}


def nested(value: Any, depth: int) -> Any:
    """``value`` under ``depth`` levels of arrays and objects, parsed as the relay parses it."""
    text = orjson.dumps(value)
    return orjson.loads(b'[{"spec":' * (depth // 2) + text + b"}]" * (depth // 2))


def strings_in(value: Any) -> set[str]:
    """Every string of a parsed document, keys included, however deep it is."""
    found: set[str] = set()
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            found.update(value)
            stack.extend(value.values())
    return found


@pytest.mark.parametrize("depth", [2, 8, 1000])
def test_a_secret_at_any_depth_is_redacted(depth: int) -> None:
    # A List of Lists, a custom resource embedding a Secret's template, a patch to one.
    for name in ("requestObject", "responseObject"):
        body = {"kind": "Widget", "spec": nested(secret_object(), depth)}
        event = {"verb": "patch", "objectRef": {"resource": "widgets"}, name: body}
        assert Redactor(KEY).redact(event)
        text = "".join(strings_in(event))
        for value in (*PLAIN.values(), *ENCODED.values()):
            assert value not in text
        assert MARKER_PREFIX in text


def test_a_secret_in_another_objects_last_applied_configuration_is_redacted() -> None:
    applied = {"kind": "Widget", "spec": {"template": nested(secret_object(), 6)}}
    widget = {
        "kind": "Widget",
        "metadata": {"annotations": {LAST_APPLIED: orjson.dumps(applied).decode() + "\n"}},
    }
    result, changed = redacted({"objectRef": {"resource": "widgets"}, "requestObject": widget})
    assert changed
    assert_no_secret(result)
    kept = result["requestObject"]["metadata"]["annotations"][LAST_APPLIED]
    assert kept.endswith("\n") and orjson.loads(kept)["kind"] == "Widget"
    plain = {"kind": "Widget", "metadata": {"annotations": {LAST_APPLIED: '{"kind":"Widget"}'}}}
    event = {"objectRef": {"resource": "widgets"}, "requestObject": plain}
    assert redacted(event) == (event, False)


def test_a_secret_is_redacted_once_where_two_rules_find_it() -> None:
    # By the objectRef's position and by its kind: markers of markers would hide equal values.
    event = {"objectRef": {"resource": "secrets"}, "requestObject": secret_object()}
    result, _ = redacted(event)
    expected = hmac.new(KEY, ENCODED["password"].encode(), hashlib.sha256).hexdigest()
    assert result["requestObject"]["data"]["password"] == MARKER_PREFIX + expected


@pytest.mark.parametrize(
    "raw",
    [
        b'{"auditID":"a","requestObject":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        b'{"auditID":"a","requestObject":{"data":{"k":"\xe9\xff"}}}',
        b'{"auditID":"a","requestObject":{"data":',
    ],
    ids=["10000-deep", "not-utf8", "torn"],
)
def test_clear_says_what_it_cannot_read_and_that_it_must_be_withheld(raw: bytes) -> None:
    cleared = clear(raw, Redactor(KEY).redact)
    assert cleared.item is None and cleared.unreadable and cleared.withhold
    without_redaction = clear(raw, None)
    assert without_redaction.unreadable and not without_redaction.withhold


def test_clear_parses_and_redacts_what_it_can_read() -> None:
    raw = orjson.dumps({"objectRef": {"resource": "secrets"}, "requestObject": secret_object()})
    cleared = clear(raw, Redactor(KEY).redact)
    assert cleared.changed and cleared.unreadable is None
    assert_no_secret(cleared.item)
    assert clear(raw, None) == clear(orjson.loads(raw), None)


def test_a_kind_that_is_not_a_string_is_no_error() -> None:
    # Found by hypothesis: a list as "kind" once raised TypeError (a 500 for the whole batch).
    event = {"objectRef": {"resource": "secrets"}, "requestObject": {"kind": [], **secret_object()}}
    event["requestObject"]["kind"] = []
    result, changed = redacted(event)
    assert changed
    assert_no_secret(result)


def test_merge_patch_bodies() -> None:
    patch = {
        "data": {"password": ENCODED["password"], "gone": None},
        "metadata": {"annotations": {LAST_APPLIED: orjson.dumps(secret_object()).decode()}},
    }
    event = {"verb": "patch", "objectRef": {"resource": "secrets"}, "requestObject": patch}
    result, changed = redacted(event)
    assert changed
    assert_no_secret(result)
    assert result["requestObject"]["data"]["gone"] is None


def json_patch_event(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"verb": "patch", "objectRef": {"resource": "secrets"}, "requestObject": list(ops)}


@pytest.mark.parametrize(
    "op",
    [
        {"op": "add", "path": "/data", "value": dict(ENCODED)},
        {"op": "replace", "path": "/data/password", "value": ENCODED["password"]},
        {"op": "add", "path": "/stringData/token", "value": PLAIN["token"]},
        {"op": "test", "path": "/data/token", "value": ENCODED["token"]},
        {"op": "replace", "path": "", "value": secret_object()},
        {"op": "replace", "path": "/metadata", "value": secret_object()["metadata"]},
        {
            "op": "add",
            "path": "/metadata/annotations",
            "value": secret_object()["metadata"]["annotations"],
        },
        {
            "op": "replace",
            "path": "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration",
            "value": secret_object()["metadata"]["annotations"][LAST_APPLIED],
        },
        {"op": "add", "path": "not-a-pointer", "value": PLAIN["password"]},
    ],
)
def test_json_patch_operations_that_write_secrets(op: dict[str, Any]) -> None:
    result, changed = redacted(json_patch_event({"op": "remove", "path": "/data/old"}, op))
    assert changed
    assert_no_secret(result)
    assert result["requestObject"][0] == {"op": "remove", "path": "/data/old"}


def test_json_patch_operations_that_write_nothing_secret_are_kept() -> None:
    ops = [
        {"op": "replace", "path": "/metadata/labels/app", "value": "web"},
        {"op": "move", "from": "/data/a", "path": "/data/b"},
        {"op": "replace", "path": "/type", "value": "Opaque"},
    ]
    event = json_patch_event(*copy.deepcopy(ops))
    result, changed = redacted(event)
    assert not changed
    assert result == event


def test_raw_bodies_of_secrets_are_replaced_whole() -> None:
    event = {
        "objectRef": {"resource": "secrets"},
        "requestObject": f"password: {PLAIN['password']}",
    }
    result, changed = redacted(event)
    assert changed
    assert result["requestObject"].startswith(MARKER_PREFIX)


def test_last_applied_that_is_not_json_is_replaced_whole() -> None:
    secret = secret_object()
    secret["metadata"]["annotations"][LAST_APPLIED] = f'{{"data": "{PLAIN["password"]}'
    result, changed = redacted({"objectRef": {"resource": "secrets"}, "requestObject": secret})
    assert changed
    assert_no_secret(result)


def test_last_applied_nested_deeper_than_orjson_writes_is_replaced_whole() -> None:
    nested: Any = PLAIN["password"]
    for _ in range(300):  # orjson reads up to 1024 levels and writes up to 255
        nested = {"x": nested}
    applied = {"kind": "Secret", "data": ENCODED, "metadata": {"labels": nested}}
    secret = secret_object()
    secret["metadata"]["annotations"][LAST_APPLIED] = json.dumps(applied)
    result, changed = redacted({"objectRef": {"resource": "secrets"}, "requestObject": secret})
    assert changed
    annotation = result["requestObject"]["metadata"]["annotations"][LAST_APPLIED]
    assert annotation.startswith(MARKER_PREFIX)
    assert_no_secret(result)


def test_token_request_and_token_review() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.payload.signature"
    request = {
        "objectRef": {"resource": "serviceaccounts", "subresource": "token", "name": "default"},
        "requestObject": {"kind": "TokenRequest", "spec": {"audiences": ["api"]}},
        "responseObject": {"kind": "TokenRequest", "status": {"token": token}},
    }
    review = {
        "objectRef": {"resource": "tokenreviews", "apiGroup": "authentication.k8s.io"},
        "requestObject": {"spec": {"token": token}},
        "responseObject": {"spec": {"token": token}, "status": {"authenticated": True}},
    }
    by_kind_only = {"responseObject": {"kind": "TokenReview", "spec": {"token": token}}}
    for event in (request, review, by_kind_only):
        result, changed = redacted(event)
        assert changed
        assert token.encode() not in orjson.dumps(result)
    result, _ = redacted(request)
    assert result["requestObject"] == request["requestObject"]


def test_the_annotation_replaces_a_malformed_annotations_field() -> None:
    event = at_request_level(corpus_file_events("create_secret.json")[0])
    event["annotations"] = None
    result, changed = redacted(event)
    assert changed
    assert result["annotations"] == {REDACTED_ANNOTATION: "true"}


# --- settings ---


def parse(*argv: str, environ: dict[str, str] | None = None) -> argparse.Namespace:
    parser = EnvArgumentParser(prog="t", env_prefix="AUDIT_RELAY", environ=environ or {})
    add_redaction_arguments(parser)
    return parser.parse_args(argv)


def test_settings_read_the_key_file_and_hide_the_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("a" * 64 + "\n")
    settings = redaction_settings_from_args(
        parse("--redact-hmac-key-file", str(key_file), "--redact-resource", "ConfigMaps")
    )
    assert settings.enabled
    assert settings.hmac_key == b"a" * 64
    assert settings.resources == {"secrets", "configmaps"}
    assert "aaaa" not in repr(settings)


def test_settings_from_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("b" * 40)
    environ = {
        "AUDIT_RELAY_REDACT_HMAC_KEY_FILE": str(key_file),
        "AUDIT_RELAY_REDACT_RESOURCE": "configmaps;widgets",
    }
    settings = redaction_settings_from_args(parse(environ=environ))
    assert settings.hmac_key == b"b" * 40
    assert settings.resources == {"secrets", "configmaps", "widgets"}


def test_a_short_or_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("short\n")
    with pytest.raises(ConfigError, match="at least 32"):
        redaction_settings_from_args(parse("--redact-hmac-key-file", str(key_file)))
    with pytest.raises(ConfigError, match="--redact-hmac-key-file"):
        redaction_settings_from_args(parse("--redact-hmac-key-file", str(tmp_path / "none")))


def test_without_a_key_file_a_random_key_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="relay.events.redact"):
        first = redaction_settings_from_args(parse())
        second = redaction_settings_from_args(parse())
    assert len(first.hmac_key) >= 32 and first.hmac_key != second.hmac_key
    assert "not comparable across restarts" in caplog.text


def test_no_redact_turns_it_off_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="relay.events.redact"):
        settings = redaction_settings_from_args(parse("--no-redact"))
    assert not settings.enabled
    assert "redaction is off" in caplog.text


# --- properties ---

# What orjson.loads can yield: integers beyond 64 bits come out as floats.
int64s = st.integers(min_value=-(2**63), max_value=2**64 - 1)
json_values = st.recursive(
    st.none() | st.booleans() | int64s | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)
resources = st.sampled_from(["secrets", "configmaps", "pods", "serviceaccounts", "tokenreviews"])
secret_values = st.text(min_size=12, max_size=40).map(lambda text: "S3CRET" + text)


@settings(max_examples=300, deadline=None)
@given(
    resource=resources,
    subresource=st.sampled_from(["", "token", "status"]),
    request_object=json_values,
    response_object=json_values,
    annotations=json_values,
)
def test_any_shape_of_event_is_redacted_without_raising(
    resource: str, subresource: str, request_object: Any, response_object: Any, annotations: Any
) -> None:
    event = {
        "objectRef": {"resource": resource, "subresource": subresource},
        "requestObject": request_object,
        "responseObject": response_object,
        "annotations": annotations,
    }
    changed = Redactor(KEY).redact(event)
    orjson.dumps(event)
    if changed:
        assert event["annotations"][REDACTED_ANNOTATION] == "true"


@settings(max_examples=300, deadline=None)
@given(
    value=secret_values,
    field=st.sampled_from(["data", "stringData"]),
    noise=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    in_last_applied=st.booleans(),
    as_list=st.booleans(),
)
def test_a_planted_secret_value_never_survives(
    value: str, field: str, noise: dict[str, Any], in_last_applied: bool, as_list: bool
) -> None:
    secret: dict[str, Any] = {**noise, field: {"key": value}}
    if in_last_applied:
        secret = {"metadata": {"annotations": {LAST_APPLIED: orjson.dumps(secret).decode()}}}
    body: dict[str, Any] = {"kind": "SecretList", "items": [secret]} if as_list else secret
    event = {"objectRef": {"resource": "secrets"}, "responseObject": body}
    assert Redactor(KEY).redact(event)
    serialized = orjson.dumps(event)
    assert value.encode() not in serialized
    assert orjson.dumps(value)[1:-1] not in serialized


@settings(max_examples=200, deadline=None)
@given(
    value=secret_values,
    noise=json_values,
    path=st.lists(st.tuples(st.booleans(), st.text(max_size=6)), max_size=40),
    resource=resources,
)
def test_a_planted_secret_object_never_survives_at_any_depth(
    value: str, noise: Any, path: list[tuple[bool, str]], resource: str
) -> None:
    body: Any = {"kind": "Secret", "stringData": {"key": value}, "noise": noise}
    for in_list, key in path:
        body = [noise, body] if in_list else {key: body, "n": noise}
    event = {"objectRef": {"resource": resource}, "requestObject": body}
    assert Redactor(KEY).redact(event)
    serialized = orjson.dumps(event)
    assert value.encode() not in serialized
    assert orjson.dumps(value)[1:-1] not in serialized
