"""``audit-source eventhubs`` end to end: a broker of its own with a SASL_SSL PLAIN listener
(user ``$ConnectionString``, the connection string as password, a CA-signed certificate), as
Event Hubs' Kafka endpoint; hubs holding diagnostic-settings documents as AKS writes them,
beside other categories; a real process publishing to the session's broker."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trustme

from tests.support.audit_log import identity, log_lines
from tests.support.eventhubs import (
    CONNECTION,
    aks,
    documents,
    event_hubs_broker,
    listener_of,
    put,
    source_flags,
)
from tests.support.events import carries_secret_values
from tests.support.kafka import (
    LocalBroker,
    committed_and_end,
    create_topic,
    group_state,
    read_topic,
    topic_size,
    unique_topic,
)
from tests.support.net import wait_until
from tests.support.processes import ProcessFactory, wait_for_exit_or_fail
from tests.support.sources import (
    SourceProcess,
    assert_nothing_lost_repeats_counted,
    assert_through_a_csv_group,
)

PARTITIONS = 3


@pytest.fixture(scope="module")
def event_hubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A broker whose SASL_SSL listener plays Event Hubs' Kafka endpoint."""
    broker = event_hubs_broker(tmp_path_factory.mktemp("eventhubs"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def committed_to_the_end(broker: LocalBroker, hub: str, count: int) -> None:
    """Wait until the source's group has committed each partition of ``hub`` at its end
    (``count`` records in all)."""

    async def at_the_end() -> bool:
        committed, end = await committed_and_end(broker.bootstrap, f"audit-{hub}", hub, PARTITIONS)
        return committed == end == count

    await wait_until(at_the_end, timeout=30, what="the group's offsets at the end")


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
    *extra: str,
    connection: str = CONNECTION,
) -> SourceProcess:
    """The source reading ``hub`` in group ``audit-HUB``; ``extra`` flags come last (a flag
    given again wins)."""
    secret = checkpoints.parent / f"connection-{checkpoints.name}"
    flags = source_flags(broker, hub, secret, connection)
    return SourceProcess(processes, bootstrap, topic, checkpoints, *flags, "--from-start", *extra)


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
    await put(event_hubs, hub, values, PARTITIONS)
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
    await committed_to_the_end(event_hubs, hub, len(values))
    assert await source.metric("audit_source_lag_seconds") == 0
    assert (await source.status("/healthz"), await source.status("/readyz")) == (200, 200)

    await assert_through_a_csv_group(processes, bootstrap, topic, tmp_path / "audit.csv", lines)
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
    await put(event_hubs, hub, first_values, PARTITIONS)
    args = (processes, bootstrap, topic, tmp_path / "cp", event_hubs, hub)
    first = eventhubs_source(*args)
    await wait_until(lambda: topic_size(bootstrap, topic), timeout=30, what="first events")
    first.process.signal(signal.SIGKILL)
    first.process.wait(10)
    delivered_before = await topic_size(bootstrap, topic)
    later_values = documents(lines[4500:], 30)
    await put(event_hubs, hub, later_values, PARTITIONS)

    second = eventhubs_source(*args)
    await assert_nothing_lost_repeats_counted(bootstrap, topic, lines, second, timeout=60)
    assert delivered_before < 4500, "killed after everything was read: nothing tested"
    await committed_to_the_end(event_hubs, hub, len(first_values) + len(later_values))


async def test_two_replicas_in_one_group_split_the_partitions_and_deliver_everything(
    kafka_bootstrap: str, processes: ProcessFactory, tmp_path: Path, event_hubs: LocalBroker
) -> None:
    """A second replica joins the group mid-read (a rebalance), then the first stops: both
    read a share, every event reaches Kafka (a repeat only where a commit was lost to the
    rebalance), and the group ends committed at the hub's end."""
    bootstrap, topic = kafka_bootstrap, unique_topic()
    hub = await new_hub(event_hubs)
    lines = log_lines(3000, seed=28)
    values = documents(lines[:1500], 10)
    await put(event_hubs, hub, values, PARTITIONS)
    first = eventhubs_source(processes, bootstrap, topic, tmp_path / "cp-1", event_hubs, hub)
    await wait_until(lambda: topic_size(bootstrap, topic), timeout=30, what="first events")
    second = eventhubs_source(processes, bootstrap, topic, tmp_path / "cp-2", event_hubs, hub)

    async def both_members() -> bool:
        return await group_state(event_hubs.bootstrap, f"audit-{hub}") == ("Stable", 2)

    await wait_until(both_members, timeout=30, what="a group of two, its partitions split")
    later = documents(lines[1500:], 10)
    await put(event_hubs, hub, later, PARTITIONS)
    await read_topic(bootstrap, topic, len(lines), timeout=60)
    for replica in (first, second):
        assert await replica.metric("audit_source_events_read_total") > 0
    assert wait_for_exit_or_fail(first.process, signal.SIGTERM, timeout=20) == 0
    records = await read_topic(bootstrap, topic, len(lines), timeout=60)
    read = Counter(identity(record.value) for record in records)
    assert set(read) == set(map(identity, lines))
    await committed_to_the_end(event_hubs, hub, len(values) + len(later))


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


async def test_an_untrusted_certificate_stops_the_source_with_a_message(
    kafka_bootstrap: str, processes: ProcessFactory, tmp_path: Path, event_hubs: LocalBroker
) -> None:
    """An endpoint whose certificate another CA signed is refused for good, not retried."""
    hub = await new_hub(event_hubs)
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    source = eventhubs_source(
        processes, kafka_bootstrap, unique_topic(), tmp_path / "cp", event_hubs, hub,
        "--eventhubs-ca-file", str(other_ca),
    )  # fmt: skip
    assert source.process.wait(60) == 1
    stderr = source.process.stderr()
    assert f"the certificate of {listener_of(event_hubs).bootstrap} is not trusted" in stderr
    assert "Traceback" not in stderr
