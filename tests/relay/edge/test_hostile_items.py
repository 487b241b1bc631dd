"""One hostile input per test against the running relay and the real broker (issue 22): what
kube-apiserver really writes (nesting to 10,000, bytes that are not UTF-8) costs only its own
item; a million tiny items are a 413 before they are built; a torn body is a 400."""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp
import orjson
import pytest

from audit_common.escaped_bytes import unescape
from audit_common.headers import CONTENT_WITHHELD, ESCAPED_BYTES, REASON
from tests.consumers.messages import with_fresh_ids
from tests.support import apiserver_json
from tests.support.kafka import read_topic, topic_size
from tests.support.relay import StartRelay

pytestmark = pytest.mark.integration
ENVELOPE = b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",'


def ordinary(count: int) -> list[bytes]:
    return [
        orjson.dumps({k: v for k, v in e.items() if k not in ("kind", "apiVersion")})
        for e in with_fresh_ids(count)
    ]


def among_ordinary(hostile: bytes) -> tuple[bytes, list[bytes]]:
    """An EventList of the hostile item between ordinary ones; and every item."""
    items = [*ordinary(2), hostile, *ordinary(2)]
    return apiserver_json.event_list(items), items


def hostile_event(request_object: bytes, annotation: bytes | None = None) -> bytes:
    [fields] = with_fresh_ids(1)
    fields = {k: v for k, v in fields.items() if k not in ("kind", "apiVersion")}
    fields |= {"verb": "patch", "objectRef": {"resource": "configmaps", "namespace": "ns"}}
    return apiserver_json.item(fields, request_object, annotation)


async def post(http: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, Any]:
    async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as answer:
        return answer.status, await answer.json()


@pytest.mark.parametrize("depth", [1102, 4002, apiserver_json.GO_MAX_DEPTH])
async def test_a_deep_merge_patch_is_published_with_the_others(
    start_relay: StartRelay, http: aiohttp.ClientSession, depth: int
) -> None:
    relay = await start_relay()
    body, items = among_ordinary(hostile_event(apiserver_json.nested(depth, b"1", True)))
    assert await post(http, relay.url, body) == (200, {"accepted": 5, "deadLettered": 0})
    records = await read_topic(relay.bootstrap, relay.topic, 5, contract=False)
    assert sorted(r.value for r in records) == sorted(ENVELOPE + item[1:] for item in items)
    assert await topic_size(relay.bootstrap, relay.dead_letter_topic) == 0
    assert relay.process.popen.poll() is None


async def test_bytes_that_are_not_utf8_in_an_annotation_are_published_escaped(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    hostile = hostile_event(b"{}", annotation=b'"\xe9\xff\xfe"')
    body, items = among_ordinary(hostile)
    assert await post(http, relay.url, body) == (200, {"accepted": 5, "deadLettered": 0})
    records = await read_topic(relay.bootstrap, relay.topic, 5)
    [escaped] = [r for r in records if ESCAPED_BYTES in dict(r.headers)]
    assert dict(escaped.headers)[ESCAPED_BYTES] == b"3"
    assert escaped.value is not None and unescape(escaped.value) == ENVELOPE + hostile[1:]
    others = sorted(r.value for r in records if r is not escaped)
    assert others == sorted(ENVELOPE + item[1:] for item in items if item != hostile)


async def test_a_million_tiny_items_are_a_413_and_nothing_is_built(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay("--max-items-per-request", "4000")
    for tiny in (b"1", b'"\xff"'):  # read by msgspec, and by the byte-level scanner
        body = apiserver_json.event_list([tiny] * 1_000_000)
        status, answer = await post(http, relay.url, body)
        assert (status, answer) == (
            413,
            {
                "error": "more than 4000 items in one request (--max-items-per-request)",
                "status": 413,
            },
        )
    # A request at the bound is taken: its items are invalid, listed in one dead letter.
    status, answer = await post(http, relay.url, apiserver_json.event_list([b"1"] * 4000))
    assert (status, answer) == (200, {"accepted": 0, "deadLettered": 4000})
    [letter] = await read_topic(relay.bootstrap, relay.dead_letter_topic, 1)
    assert letter.value is not None and orjson.loads(letter.value)["invalid"] == 4000
    assert await topic_size(relay.bootstrap, relay.topic) == 0
    assert relay.process.popen.poll() is None


async def test_a_torn_body_is_a_400_kept_on_the_dead_letter_topic(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    body, _ = among_ordinary(hostile_event(apiserver_json.nested(4002, b"1", True)))
    torn = body[: len(body) * 2 // 3]
    status, answer = await post(http, relay.url, torn)
    assert status == 400
    assert answer["error"].startswith("body is not valid JSON: ")
    [letter] = await read_topic(relay.bootstrap, relay.dead_letter_topic, 1)
    assert dict(letter.headers)[REASON].startswith(b"body is not valid JSON")
    # Redaction is on by default: what it could not read is kept as a summary, not as bytes.
    assert dict(letter.headers)[CONTENT_WITHHELD] == b"true"
    summary = orjson.loads(letter.value)
    assert (summary["size"], summary["sha256"]) == (len(torn), hashlib.sha256(torn).hexdigest())
    assert await topic_size(relay.bootstrap, relay.topic) == 0
