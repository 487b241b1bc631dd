"""``audit-source eventhubs`` end to end: a broker of its own with a SASL_SSL PLAIN listener
(user ``$ConnectionString``, the connection string as password, a CA-signed certificate), as
Event Hubs' Kafka endpoint; hubs holding diagnostic-settings documents as AKS writes them,
beside other categories; a real process publishing to the session's broker."""

from __future__ import annotations

import csv
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from audit_common.kafka_connection import KafkaConnection
from tests.support.audit_log import identity, log_lines
from tests.support.events import carries_secret_values
from tests.support.kafka import (
    LocalBroker,
    SaslSslListener,
    committed_and_end,
    create_topic,
    read_topic,
    topic_size,
    unique_topic,
)
from tests.support.net import unused_port, unused_port_pair, wait_until
from tests.support.processes import ProcessFactory, wait_for_exit_or_fail
from tests.support.sources import SourceProcess

# A namespace's policy (no EntityPath): the hub is named by --eventhub.
CONNECTION = (
    "Endpoint=sb://aks-audit.servicebus.windows.net/;SharedAccessKeyName=audit-source;"
    "SharedAccessKey=bG9jYWwtdGVzdC1rZXktb2YtdGhlLXBvbGljeQ=="
)
PARTITIONS = 3
OTHER_CATEGORIES = ("kube-apiserver", "guard", "cluster-autoscaler", "kube-controller-manager")


@pytest.fixture(scope="module")
def event_hubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A broker whose SASL_SSL listener plays Event Hubs' Kafka endpoint; its PLAINTEXT
    listener serves the tests' admin calls."""
    directory = tmp_path_factory.mktemp("eventhubs")
    port = unused_port_pair()
    sasl_port = unused_port()
    while sasl_port in (port, port + 1):
        sasl_port = unused_port()
    listener = SaslSslListener(sasl_port, {"$ConnectionString": CONNECTION}, directory / "tls")
    broker = LocalBroker(port, directory / "kafka", sasl_ssl=listener)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


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
    turn), the first ``others`` documents each with one record of another category too."""
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


async def put(broker: LocalBroker, hub: str, values: list[bytes]) -> None:
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
            await producer.send(hub, value, partition=index % PARTITIONS)
        await producer.flush()
    finally:
        await producer.stop()


async def new_hub(broker: LocalBroker) -> str:
    hub = unique_topic("hub")
    await create_topic(broker.bootstrap, hub, PARTITIONS)
    return hub


def eventhubs_source(
    processes: ProcessFactory,
    bootstrap: str,
    topic: str,
    checkpoints: Path,
    broker: LocalBroker,
    hub: str,
    *,
    connection: str = CONNECTION,
) -> SourceProcess:
    listener = listener_of(broker)
    secret = checkpoints.parent / f"connection-{checkpoints.name}"
    secret.write_text(connection + "\n")
    return SourceProcess(
        processes, bootstrap, topic, checkpoints, "eventhubs",
        "--connection-string-file", str(secret), "--eventhub", hub,
        "--consumer-group", f"audit-{hub}", "--eventhubs-bootstrap", listener.bootstrap,
        "--eventhubs-ca-file", str(listener.ca_file), "--from-start",
    )  # fmt: skip


async def test_audit_records_delivered_others_skipped_malformed_dead_lettered_and_committed(
    kafka_bootstrap: str, processes: ProcessFactory, tmp_path: Path, event_hubs: LocalBroker
) -> None:
    """Every kube-audit and kube-audit-admin event reaches the topic with the bytes of its
    ``log`` text (a Secret's redacted) and through a CSV consumer group; records of other
    categories are skipped and counted; a document that is none, and an audit record whose log
    is not an event, are dead-lettered and the rest delivered; the group commits the hub's end."""
    bootstrap, topic = kafka_bootstrap, unique_topic()
    hub = await new_hub(event_hubs)
    lines = log_lines(400, seed=26)
    broken = orjson.dumps({"records": [aks("kube-audit", "I1208 not an audit event")]})
    values = documents(lines[:200], 7, others=12)
    values += [b"not json {", broken, b'{"no": "records"}', *documents(lines[200:], 13)]
    await put(event_hubs, hub, values)
    source = eventhubs_source(processes, bootstrap, topic, tmp_path / "cp", event_hubs, hub)

    records = await read_topic(bootstrap, topic, len(lines), timeout=60)
    assert Counter(identity(record.value) for record in records) == Counter(map(identity, lines))
    written = {identity(line): line.rstrip(b"\n") for line in lines}
    for record in records:
        log = written[identity(record.value)]
        assert (record.value != log) == carries_secret_values(orjson.loads(log)), log[:120]
        assert dict(record.headers)["source"] == b"eventhubs"
    dead = await read_topic(bootstrap, f"{topic}.dead", 3, timeout=20)
    assert len(dead) == 3 and {dict(r.headers)["source"] for r in dead} == {b"eventhubs"}
    assert await source.metric("audit_source_entries_skipped_total") == 12
    assert await source.metric("audit_source_events_read_total") == len(lines) + 3

    async def committed_to_the_end() -> bool:
        committed, end = await committed_and_end(
            event_hubs.bootstrap, f"audit-{hub}", hub, PARTITIONS
        )
        return committed == end == len(values)

    await wait_until(committed_to_the_end, timeout=20, what="the group's offsets at the end")
    assert await source.metric("audit_source_lag_seconds") == 0
    assert (await source.status("/healthz"), await source.status("/readyz")) == (200, 200)

    # Through a CSV consumer group unchanged: one row per event, with the source's cluster.
    output = tmp_path / "audit.csv"
    processes.start(
        "consumers", "--sink", "csv", "--kafka-bootstrap", bootstrap, "--group", f"g-{topic}",
        "--topic", topic, "--output", str(output), "--csv-columns", "auditID,stage,cluster",
    )  # fmt: skip

    def rows() -> list[list[str]]:
        if not output.exists():
            return []
        with output.open(newline="", encoding="utf-8") as file:
            return [row for row in csv.reader(file) if row[0] != "auditID"]

    await wait_until(lambda: len(rows()) >= len(lines), timeout=30, what="the CSV rows")
    assert Counter((row[0], row[1]) for row in rows()) == Counter(map(identity, lines))
    assert {row[2] for row in rows()} == {"edge-1"}
    assert wait_for_exit_or_fail(source.process, signal.SIGTERM, timeout=20) == 0


async def test_sigkill_and_restart_lose_nothing_and_count_repeats(
    kafka_bootstrap: str, processes: ProcessFactory, tmp_path: Path, event_hubs: LocalBroker
) -> None:
    """Killed mid-read, with documents added while it is down: the restart resumes at the
    group's committed offsets; every event reaches Kafka, the events repeated are no more than
    the metric counts, and the group ends committed at the hub's end."""
    bootstrap, topic = kafka_bootstrap, unique_topic()
    hub = await new_hub(event_hubs)
    lines = log_lines(6000, seed=27)
    first_values = documents(lines[:4500], 30)
    await put(event_hubs, hub, first_values)
    args = (processes, bootstrap, topic, tmp_path / "cp", event_hubs, hub)
    first = eventhubs_source(*args)
    await wait_until(lambda: topic_size(bootstrap, topic), timeout=30, what="first events")
    first.process.signal(signal.SIGKILL)
    first.process.wait(10)
    delivered_before = await topic_size(bootstrap, topic)
    later_values = documents(lines[4500:], 30)
    await put(event_hubs, hub, later_values)

    second = eventhubs_source(*args)
    records = await read_topic(bootstrap, topic, len(lines), timeout=60)
    read = Counter(identity(record.value) for record in records)
    assert set(read) == set(map(identity, lines))
    repeats = sum(read.values()) - len(set(read))
    assert repeats <= await second.metric("audit_source_events_repeated_total")
    assert delivered_before < 4500, "killed after everything was read: nothing tested"

    async def committed_to_the_end() -> bool:
        committed, end = await committed_and_end(
            event_hubs.bootstrap, f"audit-{hub}", hub, PARTITIONS
        )
        return committed == end == len(first_values) + len(later_values)

    await wait_until(committed_to_the_end, timeout=20, what="the group's offsets at the end")


async def test_a_wrong_connection_string_stops_the_source_with_a_message(
    kafka_bootstrap: str, processes: ProcessFactory, tmp_path: Path, event_hubs: LocalBroker
) -> None:
    """A key Event Hubs refuses is no outage to wait out: exit status 1, one line saying so,
    no traceback, and the connection string nowhere in the output."""
    hub = await new_hub(event_hubs)
    wrong = CONNECTION.replace("SharedAccessKey=bG9j", "SharedAccessKey=d3Jv")
    source = eventhubs_source(
        processes, kafka_bootstrap, unique_topic(), tmp_path / "cp", event_hubs, hub,
        connection=wrong,
    )  # fmt: skip
    assert source.process.wait(60) == 1
    stderr = source.process.stderr()
    assert "refused the connection string (SASL PLAIN, user $ConnectionString)" in stderr
    assert "Authentication failed" in stderr
    assert "Traceback" not in stderr
    assert "SharedAccessKey=" not in stderr + source.process.stdout()
