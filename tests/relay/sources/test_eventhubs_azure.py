"""Pure logic of ``audit-source eventhubs``: the connection string, the hub it names, the
diagnostic-settings documents unwrapped into events, and the flags that build the source."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from audit_common.errors import ConfigError
from relay.sources import SOURCES
from relay.sources.azure import parse_connection_string, unwrap
from relay.sources.eventhubs import EventHubsSource, hub_of, offsets_of
from relay.sources.settings import build_settings

KEY = "c2VjcmV0LWtleS1vZi10aGUtcG9saWN5PQ=="
NAMESPACE = f"Endpoint=sb://aks-audit.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey={KEY}"


def test_a_namespace_connection_string_gives_the_kafka_endpoint_and_hides_the_secret() -> None:
    parsed = parse_connection_string(NAMESPACE + ";\n")
    assert parsed.bootstrap == "aks-audit.servicebus.windows.net:9093"
    assert parsed.entity_path is None
    assert parsed.text == NAMESPACE + ";"
    assert KEY not in repr(parsed)


def test_a_hub_connection_string_names_the_hub_and_keys_are_read_without_case() -> None:
    text = "endpoint=sb://ns.servicebus.windows.net;sharedaccesskeyname=l;sharedaccesskey=k=;EntityPath=aks"
    parsed = parse_connection_string(text)
    assert (parsed.host, parsed.entity_path) == ("ns.servicebus.windows.net", "aks")
    assert hub_of(parsed, None) == "aks" and hub_of(parsed, "aks") == "aks"
    with pytest.raises(ConfigError, match="--eventhub other is not the connection string's"):
        hub_of(parsed, "other")
    with pytest.raises(ConfigError, match="needs --eventhub, or a connection string with"):
        hub_of(parse_connection_string(NAMESPACE), None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("   ", "the connection string is empty"),
        (f"SharedAccessKeyName=l;SharedAccessKey={KEY}", "has no Endpoint"),
        (f"Endpoint=https://ns.servicebus.windows.net/;SharedAccessKeyName=l;SharedAccessKey={KEY}",
         "Endpoint 'https://ns.servicebus.windows.net/' is not sb://"),
        (f"Endpoint=sb:///;SharedAccessKeyName=l;SharedAccessKey={KEY}", "is not sb://"),
        (f"Endpoint=sb://ns.servicebus.windows.net:5671/;SharedAccessKeyName=l;SharedAccessKey={KEY}",
         "has more than a host"),
        ("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=l",
         "needs SharedAccessKeyName and SharedAccessKey together"),
        ("Endpoint=sb://ns.servicebus.windows.net/", "has no SharedAccessKeyName and"),
        (f"{NAMESPACE};stray", "part 4 of the connection string is not KEY=VALUE"),
        (f"{NAMESPACE};Password={KEY}", "part 4 of the connection string has a key Event Hubs"),
        (f"{NAMESPACE};SharedAccessKey={KEY}", "has SharedAccessKey twice"),
        (f"{NAMESPACE};EntityPath=", "the connection string's EntityPath is empty"),
    ],
)  # fmt: skip
def test_a_malformed_connection_string_is_refused_without_its_secret(
    text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        parse_connection_string(text)
    assert KEY not in str(raised.value)


def test_flags_build_the_source_and_a_bad_file_is_a_config_error(tmp_path: Path) -> None:
    secret = tmp_path / "connection-string"
    secret.write_text(NAMESPACE + "\n")
    flags = ["eventhubs", "--checkpoint-dir", str(tmp_path), "--connection-string-file"]
    _, source, _ = build_settings([*flags, str(secret), "--eventhub", "aks"], {}, SOURCES)
    assert isinstance(source, EventHubsSource)
    assert (source.hub, source.group) == ("aks", "$Default")
    connection = source.connection
    assert connection.bootstrap == "aks-audit.servicebus.windows.net:9093"
    assert (connection.sasl_username, connection.sasl_password) == ("$ConnectionString", NAMESPACE)
    assert connection.tls and KEY not in repr(source.connection)
    environ = {"AUDIT_RELAY_EVENTHUBS_BOOTSTRAP": "127.0.0.1:19093"}
    _, source, _ = build_settings([*flags, str(secret), "--eventhub", "aks"], environ, SOURCES)
    assert isinstance(source, EventHubsSource)
    assert source.connection.bootstrap == "127.0.0.1:19093"

    missing = ["--eventhub", "aks", "--eventhubs-ca-file", str(tmp_path / "missing.pem")]
    with pytest.raises(ConfigError, match="--eventhubs-ca-file: cannot load Kafka TLS files"):
        build_settings([*flags, str(secret), *missing], {}, SOURCES)

    secret.write_text("\n")
    with pytest.raises(ConfigError, match=r"--connection-string-file: .* is empty"):
        build_settings([*flags, str(secret)], {}, SOURCES)
    secret.write_text(f"SharedAccessKeyName=l;SharedAccessKey={KEY}\n")
    with pytest.raises(ConfigError, match=f"--connection-string-file {secret}: .*no Endpoint"):
        build_settings([*flags, str(secret)], {}, SOURCES)
    with pytest.raises(ConfigError, match="needs --connection-string-file"):
        build_settings(flags[:-1], {}, SOURCES)


def aks(category: str, log: str | None) -> dict[str, object]:
    """A record as AKS's diagnostic setting writes it."""
    properties = {"stream": "stdout", "pod": "kube-apiserver-7d9f8b6c4-x2kq9"}
    if log is not None:
        properties["log"] = log
    return {
        "time": "2026-12-08T01:02:03.0000000Z",
        "resourceId": "/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERSERVICE"
        "/MANAGEDCLUSTERS/EDGE-1",
        "category": category,
        "operationName": "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read",
        "properties": properties,
    }


def test_audit_records_unwrapped_other_categories_skipped_and_the_rest_kept_whole() -> None:
    event = '{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","verb":"get"}'
    document = {
        "records": [
            aks("kube-audit", event),
            aks("kube-apiserver", "I1208 01:02:03.000000 1 controller.go:1] started"),
            aks("kube-audit-admin", "not json: still passed on, the build path dead-letters it"),
            aks("guard", "{}"),
            aks("kube-audit", None),
            "a string",
        ]
    }
    unwrapped = unwrap(orjson.dumps(document))
    assert unwrapped.skipped == 2
    assert unwrapped.items[:2] == [
        event.encode(),
        b"not json: still passed on, the build path dead-letters it",
    ]
    assert orjson.loads(unwrapped.items[2]) == aks("kube-audit", None)
    assert unwrapped.items[3] == b'"a string"'
    for value in (b"not json {", b'{"no":"records"}', b'{"records":{}}', b"[]", b"null"):
        assert unwrap(value).items == [value] and unwrap(value).skipped == 0
    assert unwrap(None).items == [b""]


def test_positions_of_other_writers_are_ignored() -> None:
    assert offsets_of({"offsets": {"0": 12, "2": 3}}) == {0: 12, 2: 3}
    assert offsets_of(None) == offsets_of({"streams": {}}) == {}
    assert offsets_of({"offsets": {"x": 1, "1": "2"}}) == {}
