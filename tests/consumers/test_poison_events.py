"""No event can wedge a consumer group: for each sink, an event built to break it, between events
that are fine, on a real broker, with real consumer processes (and the real PostgreSQL server
and HTTP receiver). The event is dead-lettered with ``sink`` and ``reason`` headers, or stored
where the sink now can; every other event is delivered; the group's lag returns to 0."""

from __future__ import annotations

import csv
import json
import random
import signal
import string
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord

from audit_common.samples import sample_events
from consumers.rules.ruleset import DEFAULT_RULES, load_rules
from relay.events.build import encode_event, event_headers
from relay.events.split import DEFAULT_API_VERSION
from tests.consumers.conftest import StartConsumer
from tests.consumers.http_receiver import Answer, Received, Receiver
from tests.consumers.messages import produce_events, produce_raw
from tests.consumers.probes import scrape, value
from tests.support.kafka import committed_and_end, create_topic, read_topic, unique_topic
from tests.support.net import unused_port, wait_until
from tests.support.processes import Process, wait_for_exit_or_fail

NewTopic = Callable[[int], Awaitable[str]]
FAST = ("--retry-backoff", "0.1", "--retry-backoff-max", "0.5", "--max-batch", "100")


@dataclass
class Stream:
    """The events topic holding ``before``, the poison, then ``after``; and a dead-letter topic."""

    topic: str
    dead_letters: str
    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    group: str

    @property
    def good(self) -> list[dict[str, Any]]:
        return self.before + self.after

    @property
    def poison_offset(self) -> int:
        return len(self.before)

    @property
    def total(self) -> int:
        return len(self.good) + 1


async def poisoned(bootstrap: str, poison: dict[str, Any] | bytes) -> Stream:
    """Publish 10 sample events, ``poison`` (an event as the relay publishes it, or a value
    as another producer wrote it), then 10 more, on a new one-partition topic."""
    topic, dead_letters = unique_topic(), unique_topic("dead")
    await create_topic(bootstrap, topic, 1)
    await create_topic(bootstrap, dead_letters, 1)
    events = sample_events(20, seed=11)
    for event in events:
        event["auditID"] = str(uuid.uuid4())
    stream = Stream(topic, dead_letters, events[:10], events[10:], f"poison-{uuid.uuid4().hex[:8]}")
    await produce_events(bootstrap, topic, stream.before)
    if isinstance(poison, bytes):
        await produce_raw(bootstrap, topic, [poison])
    else:
        await produce_large(bootstrap, topic, poison)
    await produce_events(bootstrap, topic, stream.after)
    return stream


async def produce_large(bootstrap: str, topic: str, event: dict[str, Any]) -> None:
    """Publish ``event`` as the relay does, zstd-compressed (which lets a 1.26 MB event in)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", compression_type="zstd", max_request_size=16 << 20
    )
    await producer.start()
    try:
        await producer.send_and_wait(
            topic,
            encode_event(event, DEFAULT_API_VERSION),
            key=event["auditID"].encode(),
            headers=event_headers(event, DEFAULT_API_VERSION, "default"),
        )
    finally:
        await producer.stop()


async def lag_returns_to_zero(bootstrap: str, stream: Stream, consumer: Process) -> None:
    async def caught_up() -> bool:
        assert consumer.popen.poll() is None, f"consumer exited:\n{consumer.stderr()[-3000:]}"
        return await committed_and_end(bootstrap, stream.group, stream.topic, 1) == (
            stream.total,
            stream.total,
        )

    await wait_until(caught_up, timeout=90, interval=0.3, what="lag 0")


async def the_dead_letter(bootstrap: str, stream: Stream, sink: str) -> ConsumerRecord:
    """The one record of the dead-letter topic: the poison, from ``sink``, with its place."""
    [letter] = await read_topic(bootstrap, stream.dead_letters, 1)
    headers = {name: value.decode() for name, value in letter.headers}
    assert headers["sink"] == sink
    assert headers["reason"]
    assert headers["source-topic"] == stream.topic
    assert headers["source-offset"] == str(stream.poison_offset)
    return letter


def start(
    start_consumer: StartConsumer, stream: Stream, *args: str, env: dict[str, str] | None = None
) -> Process:
    return start_consumer(
        "--topic", stream.topic, "--dead-letter-topic", stream.dead_letters, *FAST, *args,
        group=stream.group, env=env,
    )  # fmt: skip


def nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def deep_with_nul(template: dict[str, Any]) -> dict[str, Any]:
    """The PostgreSQL sink's crash loop of issue 23: ``\\u0000`` and nesting deeper than 255."""
    event = dict(template, auditID=str(uuid.uuid4()))
    event["objectRef"] = dict(event.get("objectRef") or {}, name="evil\x00name")
    event["requestObject"] = {"spec": nested(300, "bottom")}
    return event


async def test_jsonl_dead_letters_an_event_it_cannot_write_on_one_line(
    kafka_bootstrap: str, start_consumer: StartConsumer, tmp_path: Path
) -> None:
    # Pretty-printed (as no relay writes it) and nested deeper than orjson writes: the line
    # cannot be re-encoded, which raised TypeError on every try.
    template = sample_events(1)[0]
    poison = dict(template, auditID=str(uuid.uuid4()), requestObject={"x": nested(300, 1)})
    stream = await poisoned(kafka_bootstrap, json.dumps(poison, indent=1).encode())
    output = tmp_path / "events.jsonl"
    consumer = start(start_consumer, stream, "--sink", "jsonl", "--output", str(output))
    await lag_returns_to_zero(kafka_bootstrap, stream, consumer)
    letter = await the_dead_letter(kafka_bootstrap, stream, "jsonl")
    assert "Recursion limit" in dict(letter.headers)["reason"].decode()
    written = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    assert [event["auditID"] for event in written] == [e["auditID"] for e in stream.good]
    assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0


async def test_csv_rows_of_names_with_line_breaks_and_quotes_parse_and_none_is_lost(
    kafka_bootstrap: str, start_consumer: StartConsumer, tmp_path: Path
) -> None:
    # A carriage return alone was written unquoted: the csv module read the row as two. Names
    # with line feeds and quotes, and the deep event with \u0000, are rows like any other.
    poison = deep_with_nul(sample_events(1)[0])
    poison["objectRef"]["name"] = "cr\ronly"
    stream = await poisoned(kafka_bootstrap, poison)
    output = tmp_path / "events.csv"
    consumer = start(
        start_consumer, stream, "--sink", "csv", "--output", str(output),
        "--csv-columns", "auditID,name",
    )  # fmt: skip
    await lag_returns_to_zero(kafka_bootstrap, stream, consumer)
    with output.open(newline="") as file:
        rows = list(csv.reader(file))
    assert [row[0] for row in rows] == [e["auditID"] for e in [*stream.before, poison]] + [
        e["auditID"] for e in stream.after
    ]
    assert rows[stream.poison_offset][1] == "cr\ronly"
    assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0


async def test_postgres_stores_the_deep_event_and_dead_letters_a_name_no_index_takes(
    kafka_bootstrap: str, start_consumer: StartConsumer, postgres_dsn: str
) -> None:
    deep = deep_with_nul(sample_events(1)[0])
    # A user name no btree index entry can hold (2704 bytes at most, and random text does not
    # compress): SQLSTATE 54000 on every try, which was retried for ever.
    poison = dict(sample_events(1, seed=7)[0], auditID=str(uuid.uuid4()))
    rng = random.Random(5)
    poison["user"] = {"username": "".join(rng.choices(string.ascii_letters, k=12000))}
    stream = await poisoned(kafka_bootstrap, poison)
    await produce_events(kafka_bootstrap, stream.topic, [deep])
    stream.after.append(deep)
    env = {"AUDIT_CONSUMER_POSTGRES_DSN": postgres_dsn}
    consumer = start(start_consumer, stream, "--sink", "postgres", env=env)
    await lag_returns_to_zero(kafka_bootstrap, stream, consumer)
    await the_dead_letter(kafka_bootstrap, stream, "postgres")
    connection = await asyncpg.connect(postgres_dsn)
    try:
        ids = {row[0] for row in await connection.fetch("SELECT audit_id FROM audit_events")}
        stored = await connection.fetchrow(
            "SELECT name, event_text FROM audit_events WHERE audit_id = $1", deep["auditID"]
        )
    finally:
        await connection.close()
    assert ids == {event["auditID"] for event in stream.good}
    assert stored is not None and stored["name"] == "evilname"
    assert orjson.loads(stored["event_text"])["requestObject"] == deep["requestObject"]
    assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0


async def test_http_dead_letters_the_event_the_server_refuses_alone(
    kafka_bootstrap: str, start_consumer: StartConsumer
) -> None:
    poison = dict(sample_events(1)[0], auditID=str(uuid.uuid4()))
    marker = poison["auditID"].encode()

    def respond(received: Received) -> Answer:
        # A server limit on one document: every body holding it is refused whole.
        if marker in received.body:
            return Answer(413, body=b"document too large")
        return Answer()

    stream = await poisoned(kafka_bootstrap, poison)
    async with Receiver(respond=respond) as receiver:
        consumer = start(start_consumer, stream, "--sink", "http", "--http-url", receiver.url)
        await lag_returns_to_zero(kafka_bootstrap, stream, consumer)
        letter = await the_dead_letter(kafka_bootstrap, stream, "http")
        assert "answered 413" in dict(letter.headers)["reason"].decode()
        delivered = [line["auditID"] for request in receiver.accepted() for line in request.lines()]
        assert sorted(delivered) == sorted(event["auditID"] for event in stream.good)
        assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0


def huge_privileged_pod() -> dict[str, Any]:
    """Issue 23's alert too large for its topic: a privileged Pod of 300 containers whose image
    names are 4 KiB long (a 1.26 MB event, the alert 2.5 MB)."""
    rules = load_rules([DEFAULT_RULES])
    for event in sample_events(400, seed=3):
        if any(a.rule == "Pod With Host Access Created" for a in rules.evaluate(event)):
            break
    else:
        raise AssertionError("no privileged pod in the samples")
    containers = event["requestObject"]["spec"]["containers"]
    first = containers[0]
    rng = random.Random(9)
    event["requestObject"]["spec"]["containers"] = [
        dict(first, name=f"c{i}", image="".join(rng.choices(string.ascii_lowercase, k=4096)))
        for i in range(300)
    ]
    event["auditID"] = str(uuid.uuid4())
    return event


async def test_alerts_cut_an_alert_too_large_and_dead_letter_what_the_url_refuses(
    kafka_bootstrap: str, start_consumer: StartConsumer, http: aiohttp.ClientSession
) -> None:
    poison = huge_privileged_pod()
    stream = await poisoned(kafka_bootstrap, poison)
    alerts_topic = unique_topic("alerts")  # the consumer creates it

    def respond(received: Received) -> Answer:
        # Falcosidekick behind a proxy with an 4 KiB body limit: only the poison's cut alert
        # (about 5 KB, its images cut to 2048 characters twice) is over it.
        return Answer(413, body=b"too large") if len(received.body) > 4096 else Answer()

    port = unused_port()
    async with Receiver(respond=respond) as receiver:
        consumer = start(
            start_consumer, stream, "--sink", "alerts", "--alerts-topic", alerts_topic,
            "--alerts-url", receiver.url, "--metrics-listen", f"127.0.0.1:{port}",
        )  # fmt: skip
        await lag_returns_to_zero(kafka_bootstrap, stream, consumer)
        samples = await scrape(http, f"http://127.0.0.1:{port}")
        # Each alert of the poison repeats the images: each one cut, none of the others.
        cut = load_rules([DEFAULT_RULES]).evaluate(poison, field_max=2048)
        assert len(cut) >= 1 and all(alert.truncated for alert in cut)
        assert value(samples, "audit_consumer_alerts_truncated_total") == len(cut)
        assert value(samples, "audit_consumer_events_refused_total") == 1
        letter = await the_dead_letter(kafka_bootstrap, stream, "alerts")
        assert "413" in dict(letter.headers)["reason"].decode()
        # 1.26 MB: over the dead-letter topic's 1 MiB, so cut, with its digest.
        headers = dict(letter.headers)
        assert int(headers["truncated-from-bytes"]) > 1_200_000
        assert len(headers["digest"]) == 64 and len(letter.value) < 1_048_576
        assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0
    expected = load_rules([DEFAULT_RULES])
    count = sum(len(expected.evaluate(event)) for event in [*stream.good, poison])
    records = await read_topic(kafka_bootstrap, alerts_topic, count)
    assert len(records) == count
    # The samples may hold a privileged pod of their own: the poison's alert is the one cut.
    [pod] = [
        r.value
        for r in records
        if r.key == b"Pod With Host Access Created" and b"...[truncated: " in r.value
    ]
    assert len(pod) <= 65536  # --alerts-max-bytes' default, from 2.5 MB
    alert = orjson.loads(pod)
    assert alert["output"].endswith(" cut])") or "...[truncated: " in alert["output"]
    images = alert["output_fields"]["ka.req.pod.containers.image"]
    assert images[-1].startswith("...[truncated: ")
