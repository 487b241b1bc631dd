"""``--sink http`` as operators run it: a POST to the real relay, Kafka, a consumer process, and
a real local HTTP server that refuses batches (503, 429) before it takes them."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from typing import Any

import aiohttp
import orjson

from relay.events.build import invalid_reason
from tests.consumers.conftest import StartConsumer
from tests.consumers.http_receiver import Answer, Received, Receiver, bulk_success
from tests.consumers.messages import with_fresh_ids
from tests.support.events import event_list
from tests.support.kafka import committed_and_end, read_topic
from tests.support.net import wait_until
from tests.support.processes import wait_for_exit_or_fail


async def test_refused_batches_are_retried_after_retry_after_and_nothing_is_lost(
    start_relay: Any, start_consumer: StartConsumer, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    events = with_fresh_ids(400)
    assert all(invalid_reason(e) is None for e in events)
    async with http.post(relay.url, data=event_list(events)) as response:
        assert response.status == 200
    script = [
        Answer(503, {"Retry-After": "2"}, b"overloaded"),
        Answer(429, {"Retry-After": "1"}, b"slow down"),
        Answer(502),
    ]
    release = asyncio.Event()
    async with Receiver(script, release=release) as receiver:
        consumer = start_consumer(
            "--sink", "http", "--topic", relay.topic, "--http-url", receiver.url,
            "--retry-backoff", "0.1", "--retry-backoff-max", "0.2",
            group="forward",
            env={"AUDIT_CONSUMER_DEAD_LETTER_TOPIC": relay.dead_letter_topic},
        )  # fmt: skip
        await wait_until(
            lambda: len(receiver.requests) == 3, timeout=30, what="three refused POSTs"
        )
        # The fourth POST is held unanswered: until a 2xx, no offset is committed.
        await wait_until(
            lambda: (
                "could write to the sink" not in consumer.stderr()
                and consumer.stderr().count("cannot write to the sink") == 3
            ),
            timeout=10,
            what="three failures logged",
        )
        assert await committed_and_end(relay.bootstrap, "forward", relay.topic, 3) == (0, 400)
        release.set()
        await wait_until(
            lambda: sum(len(r.lines()) for r in receiver.accepted()) >= len(events),
            timeout=30,
            what="every event accepted",
        )
        assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0
    refused = receiver.requests[:3]
    assert [r.answered.status for r in refused] == [503, 429, 502]
    # Retry-After honoured even though the runner's backoff is 0.1 s.
    assert refused[1].at - refused[0].at >= 1.9
    assert refused[2].at - refused[1].at >= 0.9
    # Every refused body came again, and every event was accepted exactly once.
    assert refused[0].body == refused[1].body == refused[2].body == receiver.requests[3].body
    accepted = Counter(doc["auditID"] for r in receiver.accepted() for doc in r.lines())
    assert accepted == Counter(e["auditID"] for e in events)
    assert await committed_and_end(relay.bootstrap, "forward", relay.topic, 3) == (400, 400)
    assert "Traceback" not in consumer.stderr()


async def test_elasticsearch_bulk_end_to_end(
    start_relay: Any, start_consumer: StartConsumer, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    events = with_fresh_ids(120)
    async with http.post(relay.url, data=event_list(events)) as response:
        assert response.status == 200
    async with Receiver(respond=bulk_success) as receiver:
        consumer = start_consumer(
            "--sink", "http", "--topic", relay.topic, "--http-url", receiver.url + "/_bulk",
            "--http-format", "elasticsearch", "--http-index", "k8s-audit", "--http-gzip",
            group="bulk",
        )  # fmt: skip
        await wait_until(
            lambda: sum(len(r.lines()) for r in receiver.accepted()) >= 2 * len(events),
            timeout=30,
            what="every event in a _bulk body",
        )
        assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0
    lines = [line for r in receiver.accepted() for line in r.lines()]
    assert all(r.headers["Content-Encoding"] == "gzip" for r in receiver.requests)
    assert all(r.path == "/ingest/_bulk" for r in receiver.requests)
    actions, sources = lines[::2], lines[1::2]
    assert {a["create"]["_index"] for a in actions} == {"k8s-audit"}
    assert Counter(s["auditID"] for s in sources) == Counter(e["auditID"] for e in events)
    assert {s["cluster"] for s in sources} == {"default"}
    assert await committed_and_end(relay.bootstrap, "bulk", relay.topic, 3) == (120, 120)


async def test_a_document_the_bulk_api_refuses_for_good_is_dead_lettered_the_rest_committed(
    start_relay: Any, start_consumer: StartConsumer, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    events = with_fresh_ids(60)
    poison = events[17]["auditID"]
    async with http.post(relay.url, data=event_list(events)) as response:
        assert response.status == 200

    def one_mapping_error(received: Received) -> Answer:
        items = [
            {"create": {"status": 400, "error": {"type": "mapper_parsing_exception"}}}
            if source["auditID"] == poison
            else {"create": {"status": 201}}
            for source in received.lines()[1::2]
        ]
        return Answer(200, body=orjson.dumps({"errors": True, "items": items}))

    async with Receiver(respond=one_mapping_error) as receiver:
        consumer = start_consumer(
            "--sink", "http", "--topic", relay.topic, "--http-url", receiver.url,
            "--http-format", "elasticsearch",
            group="bulk-refused",
            env={"AUDIT_CONSUMER_DEAD_LETTER_TOPIC": relay.dead_letter_topic},
        )  # fmt: skip

        async def all_committed() -> bool:
            committed = await committed_and_end(relay.bootstrap, "bulk-refused", relay.topic, 3)
            return committed == (60, 60)

        await wait_until(all_committed, timeout=60, interval=0.5, what="every offset committed")
        assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0
    [dead] = await read_topic(relay.bootstrap, relay.dead_letter_topic, 1)
    assert orjson.loads(dead.value)["auditID"] == poison
    headers = dict(dead.headers)
    assert headers["sink"] == b"http"
    assert b"mapper_parsing_exception" in headers["reason"]
    written = [s["auditID"] for r in receiver.requests for s in r.lines()[1::2]]
    assert set(written) == {e["auditID"] for e in events}  # each sent once; one refused
    assert "Traceback" not in consumer.stderr()
