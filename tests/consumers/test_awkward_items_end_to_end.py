"""Items kube-apiserver really writes and parsers refuse, among ordinary ones, from a POST to the
real relay through Kafka into the JSON lines, CSV, HTTP and PostgreSQL sinks (issue 22): every
other item delivered as sent, the awkward ones delivered (escaped, reversibly) or dead-lettered
alone, and no consumer down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import ConsumerRecord
from hypothesis import given, settings

from audit_common import json_scan
from audit_common.escaped_bytes import unescape
from audit_common.headers import CONTENT_WITHHELD, ESCAPED_BYTES, SINK
from tests.consumers.conftest import StartConsumer
from tests.consumers.http_receiver import Receiver
from tests.consumers.messages import with_fresh_ids
from tests.consumers.test_postgres_end_to_end import postgres_env, table
from tests.support import apiserver_json
from tests.support.contract import check_record
from tests.support.kafka import read_topic
from tests.support.net import wait_until

pytestmark = pytest.mark.integration
ORDINARY = 30
ENVELOPE = b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",'


def drawn_request_object() -> bytes:
    """One value of the apiserver generator, the same every run, with bytes that are not UTF-8."""
    drawn: list[bytes] = []

    @settings(max_examples=1, database=None, derandomize=True)
    @given(apiserver_json.VALUES)
    def draw(value: bytes) -> None:
        drawn[:] = [value]

    draw()
    return b'{"patch":[' + drawn[0] + b',"\xc3(\xff"]}'


def posted() -> tuple[bytes, list[bytes], list[bytes], bytes]:
    """The body; its ordinary items; its awkward items that are events; the one that is not."""
    events = [
        {k: v for k, v in event.items() if k not in ("kind", "apiVersion")}
        for event in with_fresh_ids(ORDINARY + 5)
    ]
    patch = {"verb": "patch", "objectRef": {"resource": "configmaps", "namespace": "ns"}}
    awkward = [
        apiserver_json.item({**events[-1], **patch}, apiserver_json.nested(1102, b"1", True)),
        apiserver_json.item({**events[-2], **patch}, apiserver_json.nested(4002, b"1", True)),
        apiserver_json.item({**events[-3], **patch}, apiserver_json.nested(10_000, b"[]", False)),
        apiserver_json.item({**events[-4], **patch}, b"{}", annotation=b'"\xe9\xff\xfe"'),
        apiserver_json.item({**events[-5], **patch}, drawn_request_object()),
    ]
    ordinary = [orjson.dumps(event) for event in events[:ORDINARY]]
    not_json = b'{"auditID":"x","verb":tru}'
    items = ordinary[:10] + awkward[:2] + [not_json] + ordinary[10:20] + awkward[2:] + ordinary[20:]
    return apiserver_json.event_list(items), ordinary, awkward, not_json


def audit_id(value: bytes) -> str:
    """The auditID of a value however deep (orjson refuses past 1,024 levels)."""
    spans = json_scan.members(value)
    return str(orjson.loads(value[slice(*spans["auditID"])]))


def as_sent(record: ConsumerRecord[bytes, bytes]) -> bytes:
    """The record's value with the escape undone where its header says it was applied."""
    assert record.value is not None
    return unescape(record.value) if ESCAPED_BYTES in dict(record.headers) else record.value


async def test_awkward_items_cost_only_themselves_through_every_sink(
    start_relay: Any,
    start_consumer: StartConsumer,
    http: aiohttp.ClientSession,
    postgres_dsn: str,
    tmp_path: Path,
) -> None:
    relay = await start_relay()
    body, ordinary, awkward, not_json = posted()
    async with http.post(relay.url, data=body) as response:
        assert response.status == 200, await response.text()
        assert await response.json() == {"accepted": ORDINARY + 5, "deadLettered": 1}

    # Checked against the contract below: jsonschema recurses, too deep for the deep ones.
    published = await read_topic(relay.bootstrap, relay.topic, ORDINARY + 5, contract=False)
    assert sorted(as_sent(r) for r in published) == sorted(
        ENVELOPE + item[1:] for item in ordinary + awkward
    )
    escaped = [r for r in published if ESCAPED_BYTES in dict(r.headers)]
    assert {audit_id(as_sent(r)) for r in escaped} == {audit_id(a) for a in awkward[3:]}
    for record in published:
        assert record.value is not None
        record.value.decode()  # UTF-8, every one
        if len(record.value) < 4000:  # the deep ones are beyond jsonschema's recursion
            check_record(record)
    [letter] = await read_topic(relay.bootstrap, relay.dead_letter_topic, 1)
    check_record(letter)
    assert letter.value is not None
    # Redaction is on by default: the item it could not read is withheld, kept as a summary.
    assert dict(letter.headers)[CONTENT_WITHHELD] == b"true"
    summary = orjson.loads(letter.value)
    assert (summary["auditID"], summary["size"]) == ("x", len(not_json))
    exact = {r.value for r in published}
    every_id = {audit_id(item) for item in ordinary + awkward}
    env = {"AUDIT_CONSUMER_DEAD_LETTER_TOPIC": relay.dead_letter_topic}

    output = tmp_path / "events.jsonl"
    jsonl = start_consumer(
        "--sink", "jsonl", "--topic", relay.topic, "--output", str(output), env=env
    )  # fmt: skip
    csv = start_consumer(
        "--sink", "csv", "--topic", relay.topic, "--csv-columns", "auditID,verb,username",
        group="csv", env=env,
    )  # fmt: skip
    async with Receiver() as receiver:
        forward = start_consumer(
            "--sink", "http", "--topic", relay.topic, "--http-url", receiver.url,
            group="http", env=env,
        )  # fmt: skip
        pg_env = {**postgres_env(postgres_dsn, tmp_path), **env}
        postgres = start_consumer(
            "--sink", "postgres", "--topic", relay.topic, group="pg", env=pg_env
        )  # fmt: skip

        def forwarded() -> set[str]:
            lines = [line for r in receiver.accepted() for line in r.body.splitlines()]
            return {audit_id(line) for line in lines if line.strip()}

        await wait_until(
            lambda: (
                output.exists()
                and output.read_bytes().count(b"\n") >= len(exact)
                and csv.stdout().count("\n") >= len(exact)
                and forwarded() == every_id
            ),
            timeout=90,
            what="every event in the JSON lines file, the CSV rows and the HTTP receiver",
        )
        assert set(output.read_bytes().splitlines()) == exact
        assert {line.split(",")[0] for line in csv.stdout().splitlines()} == every_id

        async def stored_or_refused() -> set[str]:
            assert postgres.popen.poll() is None, postgres.stderr()[-3000:]
            rows = {row[0] for row in await table(postgres_dsn)}
            letters = await read_topic(relay.bootstrap, relay.dead_letter_topic, 1, timeout=5)
            refused = {
                audit_id(letter.value)
                for letter in letters
                if letter.value and dict(letter.headers).get(SINK) == b"postgres"
            }
            return rows | refused

        async def all_there() -> bool:
            return await stored_or_refused() == every_id

        await wait_until(all_there, timeout=90, interval=0.5, what="each event stored or refused")
        # Every ordinary event is in the table itself.
        rows = {row[0] for row in await table(postgres_dsn)}
        assert {audit_id(item) for item in ordinary} <= rows
        for process in (jsonl, csv, forward, postgres):
            assert process.popen.poll() is None, process.stderr()[-3000:]
            assert "Traceback" not in process.stderr()
