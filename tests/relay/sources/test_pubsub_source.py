"""``audit-source pubsub`` end to end against the Pub/Sub emulator (deploy/local/pubsub, Google's
pstest) on 127.0.0.1: GKE's audit entries published as a log sink publishes them, beside entries
of other services and a message that is no LogEntry; a real process into the session's broker."""

from __future__ import annotations

import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from google.api_core import exceptions as api

from audit_common.errors import SourceError
from relay.sources.backoff import with_retries
from relay.sources.pubsub import failure_kind
from tests.support.kafka import LocalBroker, read_topic, topic_size, unique_topic
from tests.support.net import unused_port, wait_until
from tests.support.processes import ProcessFactory, wait_for_exit_or_fail
from tests.support.pubsub import PROJECT, LocalPubSub, gke_entries, other_entries
from tests.support.sources import (
    SourceProcess,
    assert_nothing_lost_repeats_counted,
    csv_consumer,
)

# Short, so that what a killed source held comes back soon (the emulator allows 1 s and up).
ACK_DEADLINE = 2


@pytest.fixture
def pubsub(tmp_path: Path) -> Iterator[LocalPubSub]:
    """The emulator on a free port of 127.0.0.1, stopped at the end."""
    emulator = LocalPubSub(unused_port(), tmp_path / "pubsub")
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


async def subscription(pubsub: LocalPubSub) -> tuple[str, str]:
    """A new topic, as a log sink's destination, and its subscription."""
    name = uuid.uuid4().hex[:10]
    topic = f"projects/{PROJECT}/topics/gke-audit-{name}"
    sub = f"projects/{PROJECT}/subscriptions/audit-source-{name}"
    await pubsub.create(topic, sub, ACK_DEADLINE)
    return topic, sub


def pubsub_source(
    processes: ProcessFactory, bootstrap: str, topic: str, checkpoints: Path, endpoint: str,
    sub: str, *extra: str,
) -> SourceProcess:  # fmt: skip
    return SourceProcess(
        processes, bootstrap, topic, checkpoints, "pubsub", "--subscription", sub,
        "--pubsub-endpoint", endpoint, "--pubsub-ack-deadline", str(ACK_DEADLINE), *extra,
    )  # fmt: skip


async def test_entries_rebuilt_other_entries_skipped_malformed_dead_lettered(
    kafka_bootstrap: str, processes: ProcessFactory, tmp_path: Path, pubsub: LocalPubSub
) -> None:
    bootstrap, topic = kafka_bootstrap, unique_topic()
    sink_topic, sub = await subscription(pubsub)
    made = gke_entries(300, seed=26)
    malformed = b'{"insertId": "x", "logName": "projects/acme-prod/logs/a", "protoPa'
    published = [data for data, _ in made] + other_entries(40) + [malformed]
    random.Random(5).shuffle(published)
    await pubsub.publish(sink_topic, published)
    source = pubsub_source(processes, bootstrap, topic, tmp_path / "cp", pubsub.endpoint, sub)
    records = await read_topic(bootstrap, topic, len(made), timeout=30)
    [dead] = await read_topic(bootstrap, f"{topic}.dead", 1, timeout=20, contract=False)
    assert dict(dead.headers)["source"] == b"pubsub"
    # Each event as rebuilt, field by field, once.
    expected = {event["auditID"]: event for _, event in made}
    assert Counter(orjson.loads(r.value)["auditID"] for r in records) == Counter(expected.keys())
    for record in records:
        event = orjson.loads(record.value)
        assert event == expected[event["auditID"]], event["auditID"]
        headers = dict(record.headers)
        assert (headers["source"], headers["cluster"]) == (b"pubsub", b"edge-1")
        assert record.key == event["auditID"].encode()
    await wait_until(
        lambda: source.metric("audit_source_entries_skipped_total"), timeout=10, what="skips"
    )
    assert await source.metric("audit_source_entries_skipped_total") == 40
    assert await source.metric("audit_source_events_read_total") == len(made) + 1
    assert (await source.status("/healthz"), await source.status("/readyz")) == (200, 200)
    assert wait_for_exit_or_fail(source.process, signal.SIGTERM, timeout=20) == 0
    assert await topic_size(bootstrap, topic) == len(made)

    # Through a CSV consumer group unchanged: one row per event.
    columns = "auditID,verb,username,namespace,resource,name,subresource,code,decision,cluster"
    rows = csv_consumer(processes, bootstrap, topic, tmp_path / "audit.csv", columns)
    await wait_until(lambda: len(rows()) >= len(made), timeout=30, what="the CSV rows")
    ref_fields = ("namespace", "resource", "name", "subresource")  # UNKNOWN: not in the event
    assert sorted(rows()) == sorted(
        [e["auditID"], e["verb"], e["user"]["username"],
         *(e["objectRef"].get(field, "UNKNOWN") for field in ref_fields),
         str(e["responseStatus"]["code"]), e["annotations"]["authorization.k8s.io/decision"],
         "edge-1"]
        for _, e in made
    )  # fmt: skip


async def test_sigkill_mid_way_and_restart_lose_nothing(
    kafka_bootstrap: str, processes: ProcessFactory, tmp_path: Path, pubsub: LocalPubSub
) -> None:
    """Killed while chunks are under way: what it had not acknowledged comes back after the ack
    deadline to the restarted source; every event reaches Kafka, repeats no more than counted."""
    bootstrap, topic = kafka_bootstrap, unique_topic()
    sink_topic, sub = await subscription(pubsub)
    made = gke_entries(3000, seed=27)
    await pubsub.publish(sink_topic, [data for data, _ in made])
    args = (processes, bootstrap, topic, tmp_path / "cp", pubsub.endpoint, sub)
    first = pubsub_source(*args, "--pubsub-max-messages", "100")
    await wait_until(lambda: topic_size(bootstrap, topic), timeout=20, what="first events")
    first.process.signal(signal.SIGKILL)
    first.process.wait(10)
    second = pubsub_source(*args, "--pubsub-max-messages", "100")
    events = [event for _, event in made]
    await assert_nothing_lost_repeats_counted(bootstrap, topic, events, second, timeout=60)
    assert wait_for_exit_or_fail(second.process, signal.SIGTERM, timeout=20) == 0


async def test_held_messages_extended_while_kafka_is_down_delivered_once(
    broker_factory: Callable[[], LocalBroker],
    processes: ProcessFactory,
    tmp_path: Path,
    pubsub: LocalPubSub,
) -> None:
    """Kafka stopped for several ack deadlines while a chunk is held: its deadline is extended,
    so another reader of the subscription gets none of it; once Kafka is back every event is
    there once."""
    broker = broker_factory()
    bootstrap, topic = broker.bootstrap, unique_topic()
    sink_topic, sub = await subscription(pubsub)
    made = gke_entries(140, seed=28)
    await pubsub.publish(sink_topic, [data for data, _ in made[:100]])
    source = pubsub_source(
        processes, bootstrap, topic, tmp_path / "cp", pubsub.endpoint, sub,
        "--pubsub-max-messages", "50", "--ack-timeout", "1",
    )  # fmt: skip
    await read_topic(bootstrap, topic, 100, timeout=30)
    broker.stop()
    # One chunk (fewer than --pubsub-max-messages, published at once), read and held.
    await pubsub.publish(sink_topic, [data for data, _ in made[100:]])
    held_until = time.monotonic() + 3 * ACK_DEADLINE

    async def held_long_enough() -> bool:
        read = await source.metric("audit_source_events_read_total")
        failed = await source.metric('audit_source_errors_total{kind="deliver"}')
        return read == len(made) and failed >= 1 and time.monotonic() > held_until

    await wait_until(held_long_enough, timeout=60, what="the chunk held for 3 ack deadlines")
    assert await pubsub.available(sub) == 0
    broker.start()
    records = await read_topic(bootstrap, topic, len(made), timeout=30)
    assert Counter(orjson.loads(r.value)["auditID"] for r in records) == Counter(
        event["auditID"] for _, event in made
    )
    assert await source.metric("audit_source_events_read_total") == len(made)


async def test_missing_subscription_is_a_clear_error_and_exit_1(
    kafka_bootstrap: str, processes: ProcessFactory, tmp_path: Path, pubsub: LocalPubSub
) -> None:
    missing = f"projects/{PROJECT}/subscriptions/nobody-made-it"
    source = pubsub_source(
        processes, kafka_bootstrap, unique_topic(), tmp_path / "cp", pubsub.endpoint, missing
    )
    assert source.process.wait(30) == 1
    stderr = source.process.stderr()
    assert f"Pub/Sub refused Pull of {missing}" in stderr
    assert "Traceback" not in stderr


def test_malformed_subscription_flag_exits_2(processes: ProcessFactory, tmp_path: Path) -> None:
    process = processes.start(
        "relay.sources.cli", "pubsub", "--checkpoint-dir", str(tmp_path), "--subscription",
        "audit-sub",
    )  # fmt: skip
    assert process.wait(20) == 2
    assert "--subscription must be projects/PROJECT/subscriptions/NAME" in process.stderr()


async def test_unavailable_is_retried_and_counted_and_permission_denied_stops() -> None:
    """Pure logic: the retry rule of every call the source makes."""
    errors: list[str] = []
    answers: list[Exception | str] = [
        api.ServiceUnavailable("connect failed"),
        api.DeadlineExceeded("slow"),
        "pulled",
    ]

    async def call() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def classify(exc: Exception) -> str | None:
        return failure_kind(exc, "Pull of s")

    assert await with_retries(call, errors.append, "Pull", classify, max_backoff=0.01) == "pulled"
    assert errors == ["unavailable", "deadline"]

    async def denied() -> str:
        raise api.PermissionDenied("User not authorized to perform this action.")

    with pytest.raises(SourceError, match="Pub/Sub refused Pull of s: 403 User not authorized"):
        await with_retries(denied, errors.append, "Pull", classify, max_backoff=0.01)
    assert errors == ["unavailable", "deadline"]
