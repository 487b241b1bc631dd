"""``--sink alerts``: its flags, and delivery to a real local HTTP receiver (no Kafka here; the
topic is covered end to end in tests/consumers/test_alerts_end_to_end.py)."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import pytest
from aiokafka import ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from prometheus_client import CollectorRegistry

from audit_common.errors import ConfigError, RulesError, SinkError
from audit_common.kafka_topics import max_message_bytes
from consumers.events import ConsumedEvent, decode
from consumers.rules.ruleset import Priority
from consumers.settings import build_settings
from consumers.sinks.alerts import AlertsSink
from consumers.sinks.base import EventsRefused
from tests.consumers.http_receiver import Answer, Received, Receiver
from tests.support.events import logged
from tests.support.kafka import REPO, LocalBroker, create_topic, read_topic, unique_topic
from tests.support.net import unused_port, wait_until


def alerts_sink(*flags: str, environ: dict[str, str] | None = None) -> AlertsSink:
    _, sink, _ = build_settings(["--sink", "alerts", *flags], environ or {})
    assert isinstance(sink, AlertsSink)
    return sink


def consumed(kinds: Sequence[str], cluster: str = "prod-eu") -> list[ConsumedEvent]:
    """The first event of each kind of request (tests.support.events; a stream's start) as the
    runner hands them to a sink."""
    events = [logged(kind)[0] for kind in kinds]
    return [
        decode(orjson.dumps(event), [("cluster", cluster.encode())], topic="t", partition=0,
               offset=offset)
        for offset, event in enumerate(events)
    ]  # fmt: skip


SHELLS = ("exec", "attach")


def test_flags_and_defaults(tmp_path: Path) -> None:
    sink = alerts_sink()
    assert sink.settings.topic == "k8s-audit.alerts"
    assert sink.settings.url is None
    rules = tmp_path / "rules.yaml"
    rules.write_text("- list: empty\n  items: []\n")
    sink = alerts_sink(
        "--alerts-topic", "", "--alerts-url", "http://127.0.0.1:9/x", "--min-priority", "error",
        environ={"AUDIT_CONSUMER_RULES": str(rules)},
    )  # fmt: skip
    assert sink.settings.topic is None
    assert sink.settings.url == "http://127.0.0.1:9/x"
    assert sink.rules.evaluate(logged("exec")[0]) == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--no-alerts-topic"], "needs --alerts-topic, --alerts-url or both"),
        (["--alerts-url", "ftp://example.com/"], "--alerts-url must be an http://"),
    ],
)
def test_wrong_flags(flags: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        alerts_sink(*flags)


def test_a_rules_file_that_cannot_be_loaded_stops_the_program_with_2(tmp_path: Path) -> None:
    rules = tmp_path / "broken.yaml"
    rules.write_text("- rule: Half\n  condition: ka.verb =\n")
    with pytest.raises(RulesError, match=r"broken\.yaml"):
        alerts_sink("--rules", str(rules))
    completed = subprocess.run(
        [sys.executable, "-m", "consumers", "--sink", "alerts", "--rules", str(rules)],
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr.decode().startswith("audit-consumer: error: ")
    assert "broken.yaml" in completed.stderr.decode()


async def test_each_alert_is_posted_as_falco_json_and_counted() -> None:
    async with Receiver() as receiver:
        sink = alerts_sink("--no-alerts-topic", "--alerts-url", receiver.url)
        registry = CollectorRegistry()
        sink.register_metrics(registry)
        async with sink:
            await sink.write(consumed([*SHELLS, "service NodePort"]))
            await sink.flush()
            await sink.flush()  # nothing more to wait for
    bodies = [orjson.loads(request.body) for request in receiver.requests]
    assert sorted(body["rule"] for body in bodies) == [
        "NodePort Service Created", "Shell Into Pod", "Shell Into Pod",
    ]  # fmt: skip
    assert {request.headers["Content-Type"] for request in receiver.requests} == {
        "application/json"
    }
    assert all(body["source"] == "k8s_audit" for body in bodies)
    sample = registry.get_sample_value
    labels = {"rule": "Shell Into Pod", "priority": Priority.NOTICE.label}
    assert sample("audit_consumer_alerts_total", labels) == 2


async def test_a_failed_post_fails_the_flush_and_the_batch_comes_again() -> None:
    async with Receiver([Answer(503), Answer(200)]) as receiver:
        sink = alerts_sink("--no-alerts-topic", "--alerts-url", receiver.url,
                           "--alerts-url-concurrency", "1")  # fmt: skip
        async with sink:
            batch = consumed(SHELLS)
            await sink.write(batch)
            with pytest.raises(SinkError, match="answered 503"):
                await sink.flush()
            await sink.write(batch)  # what the runner does
            await sink.flush()
    statuses = [request.answered.status for request in receiver.requests]
    assert statuses == [503, 200, 200, 200]  # at least once: the 200 of the first try too


async def test_an_alert_refused_for_good_refuses_its_event_only() -> None:
    def refuse_attach(received: Received) -> Answer:
        body = orjson.loads(received.body)
        return Answer(400, body=b"bad alert") if "attach" in body["output"] else Answer()

    async with Receiver(respond=refuse_attach) as receiver:
        sink = alerts_sink("--no-alerts-topic", "--alerts-url", receiver.url)
        async with sink:
            batch = consumed(SHELLS)
            await sink.write(batch)
            with pytest.raises(EventsRefused) as refused:
                await sink.flush()
    [(event, reason)] = refused.value.refused
    assert event is batch[1]
    assert "answered 400: bad alert" in reason
    assert len(receiver.requests) == 2


async def test_an_unauthorized_answer_stops_the_consumer() -> None:
    async with Receiver([Answer(401, body=b"who are you")]) as receiver:
        sink = alerts_sink("--no-alerts-topic", "--alerts-url", receiver.url)
        async with sink:
            await sink.write(consumed(SHELLS[:1]))
            with pytest.raises(ConfigError, match="answered 401"):
                await sink.flush()


async def test_an_unreachable_url_is_retried() -> None:
    async with Receiver() as receiver:
        url = receiver.url
    sink = alerts_sink("--no-alerts-topic", "--alerts-url", url)
    async with sink:
        await sink.write(consumed(SHELLS[:1]))
        with pytest.raises(SinkError, match="cannot POST an alert"):
            await sink.flush()


async def test_kafka_out_of_reach_fails_the_open_which_the_runner_retries() -> None:
    sink = alerts_sink("--kafka-bootstrap", f"127.0.0.1:{unused_port()}")
    try:
        with pytest.raises(SinkError, match="cannot connect the alerts producer"):
            await sink.open()
    finally:
        await sink.close()


def shells(count: int, large: int | None = None) -> list[ConsumedEvent]:
    """``count`` exec events, each by its own user (in its alert's output); the one at index
    ``large`` by a user whose name makes its alert over 6 KB, compressed too."""
    [event] = [e for e in logged("exec") if e["stage"] == "ResponseStarted"]
    events = []
    for offset in range(count):
        name = base64.b64encode(os.urandom(6000)).decode() if offset == large else f"user-{offset}"
        raw = orjson.dumps({**event, "user": {**event["user"], "username": name}})
        events.append(decode(raw, [], topic="t", partition=0, offset=offset))
    return events


def alert_users(records: Sequence[ConsumerRecord]) -> list[str]:
    return sorted(orjson.loads(r.value)["output_fields"]["ka.user.name"] for r in records)


async def lower_limit(bootstrap: str, topic: str, limit: int) -> None:
    """Set ``topic``'s max.message.bytes to ``limit`` and wait until the broker says so."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"max.message.bytes": str(limit)}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, config)])

        async def lowered() -> bool:
            return await max_message_bytes(admin, topic) == limit

        await wait_until(lowered, timeout=30, what="the lower limit")
    finally:
        await admin.close()


@pytest.mark.integration
async def test_an_alert_kafka_refuses_refuses_its_event_and_the_rest_is_delivered(
    kafka_bootstrap: str,
) -> None:
    """All alerts go to one partition, whose limit is lowered after the sink read it: the
    broker refuses the batch of the large alert, then answers OUT_OF_ORDER_SEQUENCE_NUMBER to
    the batches after it on that producer. The sink sends them again on a new producer; the
    large alert's event is refused (dead-lettered by the runner), every other alert is
    delivered once."""
    topic = unique_topic("alerts")
    await create_topic(kafka_bootstrap, topic)
    sink = alerts_sink("--kafka-bootstrap", kafka_bootstrap, "--alerts-topic", topic,
                       "--alerts-field-max-chars", "100000")  # fmt: skip
    events = shells(61, large=30)
    async with sink:
        await lower_limit(kafka_bootstrap, topic, 4000)
        await sink.write(events)
        with pytest.raises(EventsRefused) as refused:
            await sink.flush()
    [(event, reason)] = refused.value.refused
    assert event is events[30]
    assert "Kafka refused an alert" in reason and "MessageSizeTooLarge" in reason
    delivered = await read_topic(kafka_bootstrap, topic, 60)
    assert alert_users(delivered) == sorted(f"user-{i}" for i in range(61) if i != 30)


@pytest.mark.integration
async def test_a_broker_restart_while_alerts_are_in_flight_loses_none(
    broker_factory: Callable[[], LocalBroker],
) -> None:
    """The broker stops (controlled shutdown) and starts while batches of alerts are sent; the
    runner writes a failed batch again, as here. Every alert is delivered at least once."""
    broker = broker_factory()
    topic = unique_topic("alerts")
    await create_topic(broker.bootstrap, topic, 3)
    sink = alerts_sink("--kafka-bootstrap", broker.bootstrap, "--alerts-topic", topic)
    events = shells(3000)

    async def deliver() -> None:
        for start in range(0, len(events), 100):
            while True:
                try:
                    await sink.write(events[start : start + 100])
                    await sink.flush()
                    break
                except SinkError:
                    await asyncio.sleep(0.2)

    async with sink:
        delivering = asyncio.create_task(deliver())
        await asyncio.sleep(0.3)  # some batches acknowledged, others in flight
        await asyncio.to_thread(broker.stop)
        assert not delivering.done()  # the broker went away in the middle of the delivery
        await asyncio.to_thread(broker.start)
        await asyncio.wait_for(delivering, timeout=180)
    delivered = await read_topic(broker.bootstrap, topic, len(events), timeout=60)
    assert set(alert_users(delivered)) == {f"user-{i}" for i in range(len(events))}
