"""``--sink alerts`` as operators run it: events on a real broker, the consumer as a process,
alerts on the alerts topic and at a real local HTTP receiver; SIGKILL loses none."""

from __future__ import annotations

import signal
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from consumers.rules.ruleset import DEFAULT_RULES, load_rules
from tests.consumers.conftest import StartConsumer
from tests.consumers.http_receiver import Receiver
from tests.consumers.messages import produce_events, with_fresh_ids
from tests.support.kafka import committed_and_end, read_topic, topic_size
from tests.support.net import unused_port, wait_until
from tests.support.processes import wait_for_exit_or_fail

NewTopic = Callable[[int], Awaitable[str]]
# A rule that fires once on every event and names it: what lets a test tell which alerts came.
EVERY_EVENT = """\
- rule: Every Event
  desc: one alert per event, naming it
  condition: ka.verb exists
  output: "%ka.auditid"
  priority: DEBUG
  source: k8s_audit
  tags: [test]
"""


def expected_alerts(events: list[dict[str, Any]]) -> Counter[str]:
    rules = load_rules([DEFAULT_RULES])
    return Counter(alert.rule for event in events for alert in rules.evaluate(event))


async def wait_for_commit(bootstrap: str, group: str, topic: str, count: int) -> None:
    async def all_committed() -> bool:
        return await committed_and_end(bootstrap, group, topic, 3) == (count, count)

    await wait_until(all_committed, timeout=60, interval=0.5, what="every offset committed")


async def test_each_alert_reaches_the_topic_and_the_url_once(
    new_topic: NewTopic,
    start_consumer: StartConsumer,
    kafka_bootstrap: str,
    http: aiohttp.ClientSession,
) -> None:
    topic, alerts_topic = await new_topic(3), await new_topic(1)
    events = with_fresh_ids(300)
    expected = expected_alerts(events)
    assert len(expected) >= 8  # most default rules fire on the test events
    total = expected.total()
    await produce_events(kafka_bootstrap, topic, events)
    group = f"alerts-{uuid.uuid4().hex[:8]}"
    port = unused_port()
    async with Receiver() as receiver:
        consumer = start_consumer(
            "--sink", "alerts", "--topic", topic, "--alerts-topic", alerts_topic,
            "--alerts-url", receiver.url, "--max-batch", "50",
            "--metrics-listen", f"127.0.0.1:{port}",
            group=group,
        )  # fmt: skip
        await wait_for_commit(kafka_bootstrap, group, topic, len(events))
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            exposition = (await response.read()).decode()
        assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0
    records = await read_topic(kafka_bootstrap, alerts_topic, total)  # and their schema
    assert len(records) == total
    assert Counter(record.key.decode() for record in records) == expected
    assert all(orjson.loads(record.value)["rule"] == record.key.decode() for record in records)
    assert {dict(record.headers)["cluster"] for record in records} == {b"default"}
    posted = [orjson.loads(request.body) for request in receiver.requests]
    assert Counter(alert["rule"] for alert in posted) == expected
    assert sorted(posted, key=orjson.dumps) == sorted(
        (orjson.loads(record.value) for record in records), key=orjson.dumps
    )
    counted = {
        sample.labels["rule"]: sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "audit_consumer_alerts"
        for sample in family.samples
        if sample.name == "audit_consumer_alerts_total"
    }
    assert counted == dict(expected)
    assert "Traceback" not in consumer.stderr()


async def test_sigkill_in_the_middle_loses_no_alert(
    new_topic: NewTopic, start_consumer: StartConsumer, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic, alerts_topic = await new_topic(3), await new_topic(1)
    every_event = tmp_path / "every-event.yaml"
    every_event.write_text(EVERY_EVENT)
    events = with_fresh_ids(600)
    expected = expected_alerts(events)
    ids = {event["auditID"] for event in events}
    total = expected.total() + len(ids)
    await produce_events(kafka_bootstrap, topic, events)
    group = f"alerts-{uuid.uuid4().hex[:8]}"
    async with Receiver() as receiver:
        args = [
            "--sink", "alerts", "--topic", topic, "--alerts-topic", alerts_topic,
            "--alerts-url", receiver.url, "--max-batch", "50",
            "--rules", str(DEFAULT_RULES), "--rules", str(every_event),
            # One POST at a time: the stream lasts long enough to be cut in the middle.
            "--alerts-url-concurrency", "1",
            # The broker's least: the restarted member gets the killed one's partitions sooner.
            "--session-timeout", "6",
        ]  # fmt: skip
        first = start_consumer(*args, group=group)
        await wait_until(
            lambda: len(receiver.requests) >= total // 4, timeout=60, what="a quarter posted"
        )
        first.signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        posted_before_kill = len(receiver.requests)
        assert posted_before_kill < total
        second = start_consumer(*args, group=group)
        await wait_for_commit(kafka_bootstrap, group, topic, len(events))
        assert wait_for_exit_or_fail(second, signal.SIGTERM, 20) == 0
    posted = [orjson.loads(request.body) for request in receiver.requests]
    records = await read_topic(
        kafka_bootstrap, alerts_topic, await topic_size(kafka_bootstrap, alerts_topic)
    )
    for delivered in (posted, [orjson.loads(record.value) for record in records]):
        assert {
            a["output_fields"]["ka.auditid"] for a in delivered if a["rule"] == "Every Event"
        } == ids
        by_rule = Counter(a["rule"] for a in delivered if a["rule"] != "Every Event")
        assert all(by_rule[rule] >= count for rule, count in expected.items()), by_rule
        assert len(delivered) >= total
    assert "Traceback" not in second.stderr()
