"""What Azure hands ``audit-source eventhubs``: the Event Hubs namespace's connection string,
and the diagnostic-settings documents AKS writes to the hub. Pure logic, no I/O.

A diagnostic setting of an AKS cluster streams its resource logs to an Event Hub as JSON
documents in Azure Monitor's common resource-log schema, each holding a batch of records:

    {"records": [{"time": "...", "resourceId": "/SUBSCRIPTIONS/.../MANAGEDCLUSTERS/NAME",
                  "category": "kube-audit", "operationName": "Microsoft.ContainerService/
                  managedClusters/diagnosticLogs/Read",
                  "properties": {"log": "<one audit.k8s.io Event, as JSON text>",
                                 "stream": "stdout", "pod": "kube-apiserver-..."}}, ...]}

The audit categories are ``kube-audit`` (every request) and ``kube-audit-admin`` (without
get and list); a hub often receives the cluster's other categories as well (kube-apiserver,
guard, cluster-autoscaler...), which are not audit events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson

from audit_common.errors import ConfigError

AUDIT_CATEGORIES = frozenset({"kube-audit", "kube-audit-admin"})
# Event Hubs' Kafka endpoint: TLS on this port of the namespace's host.
KAFKA_PORT = 9093
# The keys of an Event Hubs connection string, as Azure's SDKs read them (case aside).
_KEYS = {
    "endpoint": "Endpoint",
    "sharedaccesskeyname": "SharedAccessKeyName",
    "sharedaccesskey": "SharedAccessKey",
    "sharedaccesssignature": "SharedAccessSignature",
    "entitypath": "EntityPath",
}


@dataclass(frozen=True)
class ConnectionString:
    """An Event Hubs connection string: where its Kafka endpoint is, which hub it may be
    limited to, and the whole text, which is the SASL PLAIN password (never in a repr)."""

    host: str
    entity_path: str | None
    text: str = field(repr=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{KAFKA_PORT}"


def parse_connection_string(text: str) -> ConnectionString:
    """Parse ``Endpoint=sb://NS.servicebus.windows.net/;SharedAccessKeyName=...;
    SharedAccessKey=...[;EntityPath=HUB]`` strictly.

    Raises ConfigError saying what is wrong; the message never quotes the string, a key or a
    signature (only the Endpoint, which is no secret).
    """
    text = text.strip()
    if not text:
        raise ConfigError("the connection string is empty")
    parts: dict[str, str] = {}
    for number, part in enumerate(text.split(";"), start=1):
        if not part.strip():
            continue  # Azure's portal ends the string with ';' at times
        name, equals, value = part.partition("=")
        if not equals:
            raise ConfigError(f"part {number} of the connection string is not KEY=VALUE")
        key = _KEYS.get(name.strip().lower())
        if key is None:
            raise ConfigError(
                f"part {number} of the connection string has a key Event Hubs does not know "
                f"(it knows {', '.join(_KEYS.values())})"
            )
        if key in parts:
            raise ConfigError(f"the connection string has {key} twice")
        if not value.strip():
            raise ConfigError(f"the connection string's {key} is empty")
        parts[key] = value.strip()
    endpoint = parts.get("Endpoint")
    if endpoint is None:
        raise ConfigError(
            "the connection string has no Endpoint (Endpoint=sb://NAMESPACE.servicebus."
            "windows.net/): copy it whole from the hub's or the namespace's access policy"
        )
    url = urlsplit(endpoint)
    if url.scheme != "sb" or not url.hostname:
        raise ConfigError(
            f"the connection string's Endpoint {endpoint!r} is not sb://NAMESPACE.servicebus."
            "windows.net/"
        )
    if url.port is not None or url.path not in ("", "/") or url.query or url.username:
        raise ConfigError(
            f"the connection string's Endpoint {endpoint!r} has more than a host: the Kafka "
            f"endpoint is always port {KAFKA_PORT} of the namespace's host"
        )
    has_key = "SharedAccessKeyName" in parts, "SharedAccessKey" in parts
    if has_key[0] != has_key[1]:
        raise ConfigError(
            "the connection string needs SharedAccessKeyName and SharedAccessKey together"
        )
    if not has_key[0] and "SharedAccessSignature" not in parts:
        raise ConfigError(
            "the connection string has no SharedAccessKeyName and SharedAccessKey (nor a "
            "SharedAccessSignature): copy a policy's connection string, not the namespace's "
            "host name"
        )
    return ConnectionString(url.hostname, parts.get("EntityPath"), text)


@dataclass(frozen=True)
class Unwrapped:
    """The items of one Event Hubs message for the runner's build path, in order: each audit
    record's ``log`` text as bytes, or, for what is not an audit record, its own bytes (the
    build path dead-letters those). ``skipped`` counts records of other categories."""

    items: list[bytes]
    skipped: int = 0


def unwrap(value: bytes | None) -> Unwrapped:
    """The audit events of one diagnostic-settings document (a Kafka record's value).

    A value that is no such document (not JSON, or without a ``records`` list) is one item, its
    bytes as they came; so is a record of an audit category without a string
    ``properties.log``, or a record without a category (re-encoded). Never raises.
    """
    raw = value or b""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Unwrapped([raw])
    records = document.get("records") if isinstance(document, dict) else None
    if not isinstance(records, list):
        return Unwrapped([raw])
    items: list[bytes] = []
    skipped = 0
    for record in records:
        category = record.get("category") if isinstance(record, dict) else None
        if isinstance(category, str) and category not in AUDIT_CATEGORIES:
            skipped += 1
            continue
        properties = record.get("properties") if category is not None else None
        log = properties.get("log") if isinstance(properties, dict) else None
        items.append(log.encode() if isinstance(log, str) else orjson.dumps(record))
    return Unwrapped(items, skipped)
