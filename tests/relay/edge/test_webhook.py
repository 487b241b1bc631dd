"""The webhook endpoint against a real broker, through a real relay process."""

from __future__ import annotations

import gzip
import hashlib
import os
import time

import aiohttp
import orjson
import pytest

from relay.edge.app import INLINE_BODY_BYTES
from relay.events.build import timestamp_ms
from tests.support.corpus import corpus_events, event_list
from tests.support.kafka import read_topic, topic_size
from tests.support.relay import StartRelay

pytestmark = pytest.mark.integration


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, **headers: str
) -> tuple[int, dict]:
    headers.setdefault("Content-Type", "application/json")
    async with http.post(url, data=body, headers=headers) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def test_corpus_arrives_once_with_value_key_headers_and_timestamp(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay("--cluster", "prod-eu")
    events = corpus_events()
    for start in range(0, len(events), 10):
        status, answer = await post(
            http, relay.url + "?timeout=30s", event_list(events[start : start + 10])
        )
        assert status == 200
        assert answer == {"accepted": len(events[start : start + 10]), "deadLettered": 0}

    records = await read_topic(relay.bootstrap, relay.topic, len(events))
    assert len(records) == len(events)

    def canonical(document: dict) -> bytes:
        return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)

    # The corpus repeats some (auditID, stage, stageTimestamp): compare whole values as multisets.
    expected = [
        {**event, "kind": "Event", "apiVersion": event.get("apiVersion", "audit.k8s.io/v1")}
        for event in events
    ]
    values = [orjson.loads(record.value) for record in records]
    assert sorted(map(canonical, values)) == sorted(map(canonical, expected))
    for record, value in zip(records, values, strict=True):
        assert list(value)[:2] == ["kind", "apiVersion"]
        assert record.key == value["auditID"].encode()
        assert record.timestamp == timestamp_ms(value["stageTimestamp"])
        headers = {name: raw.decode() for name, raw in record.headers}
        assert headers["cluster"] == "prod-eu"
        assert headers["apiVersion"] == value["apiVersion"]
        assert headers["verb"] == value["verb"]
        assert headers["stage"] == value["stage"]
        assert headers["level"] == value["level"]
        assert headers.get("user") == value.get("user", {}).get("username")
        assert headers.get("resource") == value.get("objectRef", {}).get("resource")
        assert headers.get("namespace") == value.get("objectRef", {}).get("namespace")
    assert await topic_size(relay.bootstrap, relay.dead_letter_topic) == 0


async def test_single_event_body_is_accepted(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    event = corpus_events()[0]
    status, answer = await post(http, relay.url, orjson.dumps(event))
    assert (status, answer) == (200, {"accepted": 1, "deadLettered": 0})
    [record] = await read_topic(relay.bootstrap, relay.topic, 1)
    assert orjson.loads(record.value)["auditID"] == event["auditID"]


async def test_a_stage_timestamp_a_broker_would_refuse_does_not_stamp_its_record(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    events = corpus_events()[:3]
    future = {**events[0], "auditID": "from-the-future", "stageTimestamp": "9999-12-31T23:59:59Z"}
    past = {**events[1], "auditID": "before-1970", "stageTimestamp": "1960-01-01T00:00:00Z"}
    status, answer = await post(http, relay.url, event_list([future, past, events[2]]))
    assert (status, answer) == (200, {"accepted": 3, "deadLettered": 0})
    records = {r.key: r for r in await read_topic(relay.bootstrap, relay.topic, 3)}
    assert len(records) == 3
    now_ms = time.time() * 1000
    for key, stamp in ((b"from-the-future", future), (b"before-1970", past)):
        # Stamped by the producer's clock; the value keeps the apiserver's time.
        assert abs(records[key].timestamp - now_ms) < 600_000
        assert orjson.loads(records[key].value)["stageTimestamp"] == stamp["stageTimestamp"]
    regular = records[events[2]["auditID"].encode()]
    assert regular.timestamp == timestamp_ms(events[2]["stageTimestamp"])


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b"[1, 2, 3]",
        b'{"kind": "Pod", "apiVersion": "v1"}',
        b"",
        b'{"kind":"EventList","items":{}}',
    ],
    ids=["garbage", "array", "other-kind", "empty", "items-not-list"],
)
@pytest.mark.parametrize("redaction", [True, False], ids=["redacting", "no-redact"])
async def test_bad_body_is_400_and_kept_on_dead_letter_topic(
    start_relay: StartRelay, http: aiohttp.ClientSession, body: bytes, redaction: bool
) -> None:
    relay = await start_relay(*([] if redaction else ["--no-redact"]))
    status, answer = await post(http, relay.url, body)
    assert status == 400
    assert answer["status"] == 400 and answer["error"]
    [record] = await read_topic(relay.bootstrap, relay.dead_letter_topic, 1)
    headers = dict(record.headers)
    assert headers["reason"].decode() == answer["error"]
    if redaction:  # the redactor read none of it: only what identifies it is kept
        assert headers["content-withheld"] == b"true"
        summary = orjson.loads(record.value)
        assert summary["size"] == len(body) and summary["reason"] == answer["error"]
        assert summary["sha256"] == hashlib.sha256(body).hexdigest()
    else:
        assert record.value == body and "content-withheld" not in headers
    assert await topic_size(relay.bootstrap, relay.topic) == 0


async def test_a_torn_batch_holding_a_secret_is_dead_lettered_without_its_values(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    password = "c2VjcmV0LXBhc3N3b3JkLXRvcm4="
    events = corpus_events()[:3]
    secret = {
        **events[0],
        "auditID": "torn-secret",
        "level": "Request",
        "objectRef": {"resource": "secrets", "namespace": "ns", "name": "db", "apiVersion": "v1"},
        "requestObject": {"kind": "Secret", "data": {"password": password}},
    }
    body = event_list([*events, secret, events[0]])[:-40]  # cut short: no item boundary after
    status, answer = await post(http, relay.url, body)
    assert status == 400 and "not valid JSON" in answer["error"]
    [record] = await read_topic(relay.bootstrap, relay.dead_letter_topic, 1)
    assert password.encode() not in record.value
    assert dict(record.headers)["content-withheld"] == b"true"
    summary = orjson.loads(record.value)
    assert [item["auditID"] for item in summary["items"]] == [
        *(event["auditID"] for event in events),
        "torn-secret",
        events[0]["auditID"],
    ]
    assert summary["items"][3]["objectRef"]["name"] == "db"


async def test_invalid_items_are_dead_lettered_and_the_rest_accepted(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    good = corpus_events()[:3]
    bad = [
        {"kind": 0},
        "a string",
        {"auditID": 7, "stage": "ResponseComplete"},
        {**good[0], "stageTimestamp": "yesterday"},
    ]
    status, answer = await post(
        http, relay.url, event_list([good[0], bad[0], good[1], bad[1], bad[2], good[2], bad[3]])
    )
    assert (status, answer) == (200, {"accepted": 3, "deadLettered": 4})
    assert len(await read_topic(relay.bootstrap, relay.topic, 3)) == 3
    dead = await read_topic(relay.bootstrap, relay.dead_letter_topic, 4)
    assert len(dead) == 4
    assert b'"a string"' in {r.value for r in dead}
    reasons = sorted(dict(r.headers)["reason"].decode() for r in dead)
    assert any("auditID" in reason for reason in reasons)
    assert any("not an object" in reason for reason in reasons)
    assert any("stageTimestamp" in reason for reason in reasons)


async def test_gzip_body(start_relay: StartRelay, http: aiohttp.ClientSession) -> None:
    relay = await start_relay()
    events = corpus_events()[:20]
    status, answer = await post(
        http, relay.url, gzip.compress(event_list(events)), **{"Content-Encoding": "gzip"}
    )
    assert (status, answer) == (200, {"accepted": 20, "deadLettered": 0})
    assert len(await read_topic(relay.bootstrap, relay.topic, 20)) == 20


async def test_unknown_content_encoding_is_415(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    # aiohttp decompresses gzip and deflate only: an x-gzip body would reach the parser as is.
    for encoding in ("compress", "x-gzip"):
        body = gzip.compress(event_list(corpus_events()[:1]))
        status, answer = await post(http, relay.url, body, **{"Content-Encoding": encoding})
        assert status == 415 and "gzip" in answer["error"]


async def test_body_over_limit_is_413_with_and_without_content_length(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay("--max-body-bytes", "100000")
    big = event_list(corpus_events() * 5)
    assert len(big) > 100000
    status, answer = await post(http, relay.url, big)
    assert status == 413 and "100000" in answer["error"]

    async def chunks():  # no Content-Length: the relay must stop reading at the limit
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    status, _ = await post(http, relay.url, chunks())
    assert status == 413
    # a gzip bomb is measured decoded
    bomb = gzip.compress(b" " * 5_000_000)
    status, _ = await post(http, relay.url, bomb, **{"Content-Encoding": "gzip"})
    assert status == 413
    assert await topic_size(relay.bootstrap, relay.topic) == 0


async def test_wrong_method_and_unknown_path_answer_json(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    async with http.get(relay.url) as response:
        assert response.status == 405 and (await response.json())["status"] == 405
    async with http.post(relay.base + "/nope", data=b"{}") as response:
        assert response.status == 404 and (await response.json())["status"] == 404


async def test_oversized_event_is_truncated_not_dropped(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay("--max-message-bytes", "200000")
    event = dict(corpus_events()[0])
    event["requestObject"] = {"blob": os.urandom(300_000).hex()}  # incompressible
    status, answer = await post(http, relay.url, event_list([event]))
    assert (status, answer) == (200, {"accepted": 1, "deadLettered": 0})
    [record] = await read_topic(relay.bootstrap, relay.topic, 1)
    value = orjson.loads(record.value)
    assert "requestObject" not in value
    assert value["annotations"]["audit.k8s.io/truncated"] == "true"
    async with http.get(relay.base + "/metrics") as response:
        assert "relay_events_truncated_total 1.0" in await response.text()


async def test_a_large_body_is_answered_and_arrives_whole(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay("--max-message-bytes", "200000")
    corpus = corpus_events()
    items: list[object] = [
        {**corpus[n % len(corpus)], "auditID": f"large-{n:05d}"} for n in range(1000)
    ]
    oversized = {**corpus[0], "auditID": "large-oversized"}
    oversized["requestObject"] = {"blob": os.urandom(300_000).hex()}  # compressed: 300 KB
    body = event_list([*items, oversized, "not an event"])
    assert len(body) > INLINE_BODY_BYTES  # built in a thread, with the same code
    status, answer = await post(http, relay.url, body)
    assert (status, answer) == (200, {"accepted": 1001, "deadLettered": 1})
    records = await read_topic(relay.bootstrap, relay.topic, 1001)
    keys = sorted(record.key for record in records)
    assert keys == sorted([f"large-{n:05d}".encode() for n in range(1000)] + [b"large-oversized"])
    [truncated] = [record for record in records if record.key == b"large-oversized"]
    assert "requestObject" not in orjson.loads(truncated.value)
    [dead] = await read_topic(relay.bootstrap, relay.dead_letter_topic, 1)
    assert dead.value == b'"not an event"'


async def test_health_readiness_and_metrics(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    await post(http, relay.url, event_list(corpus_events()[:5]))
    async with http.get(relay.base + "/healthz") as response:
        assert response.status == 200
    async with http.get(relay.base + "/readyz") as response:
        assert response.status == 200 and (await response.json())["ready"] is True
    async with http.get(relay.base + "/metrics") as response:
        text = await response.text()
    assert 'relay_requests_total{code="200"} 1.0' in text
    assert "relay_events_accepted_total 5.0" in text
    assert "relay_kafka_ack_seconds_count" in text
    assert "relay_requests_in_flight 0.0" in text
