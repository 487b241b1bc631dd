"""Valid JSON that parsers refuse or alter, from a POST to the relay through Kafka into the JSON
lines, CSV and PostgreSQL sinks: every event kept, its bytes as sent (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.consumers.conftest import StartConsumer
from tests.consumers.messages import with_fresh_ids
from tests.consumers.test_postgres_end_to_end import postgres_env, table, wait_for_rows
from tests.support import json_grammar
from tests.support.kafka import read_topic
from tests.support.net import wait_until

pytestmark = pytest.mark.integration
EVENTS = 40


def patches(count: int) -> list[bytes]:
    """``count`` JSON texts of the grammar, the same every run (a fixed Hypothesis seed)."""
    drawn: list[bytes] = []

    @settings(max_examples=1, database=None, derandomize=True)
    @given(st.lists(json_grammar.VALUES, min_size=count, max_size=count))
    def draw(values: list[bytes]) -> None:
        drawn[:] = values

    draw()
    fixed = [b'"\\ud800"', b"1e400", b"-0.10000000000000000001E-400", b'{"a":1,"a":2}']
    return fixed + drawn[len(fixed) :]


def posted_body() -> tuple[bytes, list[bytes]]:
    """An EventList whose items carry the patches as requestObject; and each item's bytes."""
    items = []
    for event, patch in zip(with_fresh_ids(EVENTS), patches(EVENTS), strict=True):
        # As the apiserver posts them: no kind or apiVersion of their own.
        fields = {k: v for k, v in event.items() if k not in ("kind", "apiVersion")}
        item = orjson.dumps({**fields, "requestObject": "@"}).replace(b'"@"', patch)
        items.append(item)
    body = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[' + b",".join(items)
    return body + b"]}\n", items


async def test_every_valid_json_event_reaches_each_sink_as_sent(
    start_relay: Any,
    start_consumer: StartConsumer,
    http: aiohttp.ClientSession,
    postgres_dsn: str,
    tmp_path: Path,
) -> None:
    relay = await start_relay()
    body, items = posted_body()
    async with http.post(relay.url, data=body) as response:
        assert response.status == 200, await response.text()
        assert await response.json() == {"accepted": EVENTS, "deadLettered": 0}
    published = await read_topic(relay.bootstrap, relay.topic, EVENTS)
    exact = {r.value for r in published}
    envelope = b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",'
    for item in items:
        sent = envelope + item[1:]
        if b"\n" in item or b"\r" in item:  # a value is one line: only whitespace may go
            [value] = [v for v in exact if json.loads(v) == json.loads(sent)]
            assert b"\n" not in value and len(value) < len(sent)
        else:
            assert sent in exact

    output = tmp_path / "events.jsonl"
    env = {"AUDIT_CONSUMER_DEAD_LETTER_TOPIC": relay.dead_letter_topic}
    jsonl = start_consumer(
        "--sink", "jsonl", "--topic", relay.topic, "--output", str(output), env=env
    )
    await wait_until(
        lambda: output.exists() and output.read_bytes().count(b"\n") >= EVENTS,
        timeout=60,
        what="every event in the JSON lines file",
    )
    assert set(output.read_bytes().splitlines()) == exact
    assert jsonl.popen.poll() is None, jsonl.stderr()[-2000:]

    csv = start_consumer(
        "--sink", "csv", "--topic", relay.topic, "--csv-columns", "auditID,verb,username",
        group="csv", env=env,
    )  # fmt: skip
    await wait_until(
        lambda: csv.stdout().count("\n") >= EVENTS, timeout=60, what="a CSV row per event"
    )
    ids = {line.split(",")[0] for line in csv.stdout().splitlines()}
    assert ids == {json.loads(value)["auditID"] for value in exact}

    pg_env = {**postgres_env(postgres_dsn, tmp_path), **env}
    postgres = start_consumer("--sink", "postgres", "--topic", relay.topic, group="pg", env=pg_env)
    await wait_for_rows(postgres_dsn, EVENTS, postgres)
    rows = await table(postgres_dsn, "SELECT coalesce(event_text, event::text) FROM audit_events")
    stored = [row[0] for row in rows]
    assert len(stored) == EVENTS
    kept_as_text = await table(
        postgres_dsn, "SELECT event_text FROM audit_events WHERE event_text IS NOT NULL"
    )
    assert {row[0].encode() for row in kept_as_text} <= exact
    assert len(kept_as_text) >= 1  # the lone surrogate at least
