"""Azure Event Hubs played by a local broker, for ``audit-source eventhubs``'s tests and bench:
its SASL_SSL PLAIN listener is the Kafka endpoint (user ``$ConnectionString``, the connection
string as password, a CA-signed certificate), and hubs hold diagnostic-settings documents as
an AKS cluster's diagnostic setting writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from audit_common.kafka_connection import KafkaConnection
from tests.support.kafka import LocalBroker, SaslSslListener
from tests.support.net import unused_port, unused_port_pair

# A namespace's policy (no EntityPath): the hub is named by --eventhub.
CONNECTION = (
    "Endpoint=sb://aks-audit.servicebus.windows.net/;SharedAccessKeyName=audit-source;"
    "SharedAccessKey=bG9jYWwtdGVzdC1rZXktb2YtdGhlLXBvbGljeQ=="
)
OTHER_CATEGORIES = ("kube-apiserver", "guard", "cluster-autoscaler", "kube-controller-manager")


def event_hubs_broker(directory: Path) -> LocalBroker:
    """A broker (not started) whose SASL_SSL listener takes ``CONNECTION``; its PLAINTEXT
    listener serves admin calls."""
    port = unused_port_pair()
    sasl_port = unused_port()
    while sasl_port in (port, port + 1):
        sasl_port = unused_port()
    listener = SaslSslListener(sasl_port, {"$ConnectionString": CONNECTION}, directory / "tls")
    return LocalBroker(port, directory / "kafka", sasl_ssl=listener)


def listener_of(broker: LocalBroker) -> SaslSslListener:
    assert broker.sasl_ssl is not None
    return broker.sasl_ssl


def aks(category: str, log: str) -> dict[str, Any]:
    """One record of a diagnostic-settings document, as AKS writes it."""
    return {
        "time": "2026-12-08T01:02:03.4567890Z",
        "resourceId": "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/RG"
        "/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/EDGE-1",
        "category": category,
        "operationName": "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read",
        "properties": {"log": log, "stream": "stdout", "pod": "kube-apiserver-6c9d8f7b5-q4x2m"},
    }


def documents(lines: list[bytes], per_document: int, *, others: int = 0) -> list[bytes]:
    """Documents of ``per_document`` audit records each (kube-audit and kube-audit-admin in
    turn; each ``log`` an audit.log line without its line break), the first ``others``
    documents each with one record of another category too."""
    made = []
    for number, start in enumerate(range(0, len(lines), per_document)):
        records = [
            aks(("kube-audit", "kube-audit-admin")[index % 2], line.decode().rstrip("\n"))
            for index, line in enumerate(lines[start : start + per_document])
        ]
        if number < others:
            other = OTHER_CATEGORIES[number % len(OTHER_CATEGORIES)]
            records.insert(number % len(records), aks(other, f"I1208 01:02:03 {number} info"))
        made.append(orjson.dumps({"records": records}))
    return made


async def put(broker: LocalBroker, hub: str, values: list[bytes], partitions: int) -> None:
    """Write ``values`` to the hub through the SASL_SSL listener, round robin over its
    partitions, as a diagnostic setting does."""
    listener = listener_of(broker)
    connection = KafkaConnection(
        bootstrap=listener.bootstrap,
        tls=True,
        tls_ca_file=str(listener.ca_file),
        sasl_mechanism="PLAIN",
        sasl_username="$ConnectionString",
        sasl_password=CONNECTION,
    )
    producer = AIOKafkaProducer(max_request_size=4 << 20, **connection.client_kwargs())
    await producer.start()
    try:
        for index, value in enumerate(values):
            await producer.send(hub, value, partition=index % partitions)
        await producer.flush()
    finally:
        await producer.stop()


def source_flags(
    broker: LocalBroker, hub: str, secret: Path, connection: str = CONNECTION
) -> list[str]:
    """``audit-source eventhubs``'s flags for ``hub`` (group ``audit-HUB``), its connection
    string written to ``secret``."""
    listener = listener_of(broker)
    secret.write_text(connection + "\n")
    return [
        "eventhubs", "--connection-string-file", str(secret), "--eventhub", hub,
        "--consumer-group", f"audit-{hub}", "--eventhubs-bootstrap", listener.bootstrap,
        "--eventhubs-ca-file", str(listener.ca_file),
    ]  # fmt: skip
