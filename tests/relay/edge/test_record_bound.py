"""The records a request builds count in --max-inflight-bytes: a real relay and broker."""

from __future__ import annotations

import aiohttp
import pytest

from tests.support.corpus import corpus_events, event_list
from tests.support.kafka import read_topic, topic_size
from tests.support.relay import StartRelay

pytestmark = pytest.mark.integration


async def test_a_million_tiny_items_are_413_before_their_records_are_built(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    tiny = b'{"kind":"EventList","items":[' + b",".join([b"1"] * 1_000_000) + b"]}"
    async with http.post(relay.url, data=tiny) as response:
        assert response.status == 413
        answer = await response.json()
    assert answer["status"] == 413 and "--max-inflight-bytes" in answer["error"]
    events = corpus_events()[:5]
    async with http.post(relay.url, data=event_list(events)) as response:
        assert (response.status, await response.json()) == (
            200,
            {"accepted": 5, "deadLettered": 0},
        )
    assert len(await read_topic(relay.bootstrap, relay.topic, 5)) == 5
    assert await topic_size(relay.bootstrap, relay.dead_letter_topic) == 0
    assert relay.process.popen.poll() is None
