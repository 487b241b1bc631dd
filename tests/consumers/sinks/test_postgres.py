"""The postgres sink in-process against a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import copy
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from audit_common.errors import ConfigError, SinkError
from consumers.events import ConsumedEvent, decode
from consumers.postgres import migrations
from consumers.postgres.migrate import CREATE_VERSIONS
from consumers.postgres.retention import DELETE_CHUNK
from consumers.settings import build_settings
from consumers.sinks.base import EventsRefused
from consumers.sinks.postgres import PostgresSink
from relay.events.build import encode_event
from tests.support.events import audit_events
from tests.support.net import unused_port, wait_until
from tests.support.postgres import password_of, without_password


def consumed(events: list[dict[str, Any]], cluster: str | None = "prod-eu") -> list[ConsumedEvent]:
    headers = [("cluster", cluster.encode())] if cluster else []
    return [
        decode(encode_event(e, "audit.k8s.io/v1"), headers, topic="t", partition=0, offset=i)
        for i, e in enumerate(events)
    ]


def postgres_sink(dsn: str, *flags: str) -> PostgresSink:
    _, sink, _ = build_settings(["--sink", "postgres", "--postgres-dsn", dsn, *flags], {})
    assert isinstance(sink, PostgresSink)
    return sink


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetch(query, *args)
    finally:
        await connection.close()


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def expected_row(event: dict[str, Any], cluster: str) -> dict[str, Any]:
    """The columns of ``event``'s row, worked out from the event as the apiserver wrote it."""
    user = event.get("user") or {}
    ref = event.get("objectRef") or {}
    annotations = event.get("annotations") or {}
    status = event.get("responseStatus") or {}
    return {
        "cluster": cluster,
        "audit_id": event["auditID"],
        "stage": event["stage"],
        "stage_timestamp": when(event["stageTimestamp"]),
        "request_received_timestamp": when(event["requestReceivedTimestamp"]),
        "level": event["level"],
        "verb": event["verb"],
        "username": user.get("username"),
        "groups": user.get("groups") or [],
        "source_ips": event.get("sourceIPs") or [],
        "user_agent": event.get("userAgent"),
        "impersonated_user": (event.get("impersonatedUser") or {}).get("username"),
        "namespace": ref.get("namespace"),
        "resource": ref.get("resource"),
        "subresource": ref.get("subresource"),
        "name": ref.get("name"),
        "api_group": ref.get("apiGroup"),
        "request_uri": event["requestURI"],
        "response_code": status.get("code"),
        "decision": annotations.get("authorization.k8s.io/decision"),
        "reason": annotations.get("authorization.k8s.io/reason"),
        # The relay publishes each event as an audit.log line: kind and apiVersion always set.
        "event": {"kind": "Event", "apiVersion": "audit.k8s.io/v1", **event},
    }


async def test_every_event_lands_in_the_table_field_by_field(postgres_dsn: str) -> None:
    async with postgres_sink(postgres_dsn) as sink:
        await sink.write(consumed(audit_events()))
        await sink.flush()
    rows = await fetch(postgres_dsn, "SELECT * FROM audit_events ORDER BY id")
    # Every event, the two pairs of distinct events that share (auditID, stage,
    # stageTimestamp) included: only identical bytes are one event.
    keys = {(e["auditID"], e["stage"], e["stageTimestamp"]) for e in audit_events()}
    assert len(keys) < len(rows) == len(audit_events())
    for event, record in zip(audit_events(), rows, strict=True):
        got = {column: record[column] for column in expected_row(event, "prod-eu")}
        got["event"] = orjson.loads(got["event"])
        assert got == expected_row(event, "prod-eu")


async def test_a_redelivered_batch_adds_no_row(postgres_dsn: str) -> None:
    events = consumed(audit_events())
    async with postgres_sink(postgres_dsn) as sink:
        await sink.write(events[:10])
        await sink.flush()
        await sink.write(events)  # the first ten again, as after a crash before the commit
        await sink.flush()
    [count] = await fetch(postgres_dsn, "SELECT count(*) FROM audit_events")
    assert count[0] == len(audit_events())


async def test_the_same_event_from_two_clusters_is_two_rows(postgres_dsn: str) -> None:
    event = audit_events()[:1]
    async with postgres_sink(postgres_dsn) as sink:
        await sink.write([*consumed(event, "a"), *consumed(event, "b"), *consumed(event, None)])
        await sink.flush()
    rows = await fetch(postgres_dsn, "SELECT cluster FROM audit_events ORDER BY cluster")
    assert [r["cluster"] for r in rows] == ["", "a", "b"]


async def test_nul_characters_leave_the_columns_and_the_event_is_kept_as_its_text(
    postgres_dsn: str,
) -> None:
    event = copy.deepcopy(audit_events()[0])
    event["requestURI"] = "/api/v1/namespaces/x/secrets/a\x00b"
    event["objectRef"]["name"] = "a\x00b"
    [message] = consumed([event])
    async with postgres_sink(postgres_dsn) as sink:
        await sink.write([message])
        await sink.flush()
    [record] = await fetch(
        postgres_dsn, "SELECT name, request_uri, event, event_text FROM audit_events"
    )
    assert record["name"] == "ab"
    assert record["request_uri"].endswith("/secrets/ab")
    assert record["event"] is None
    assert record["event_text"].encode() == message.raw


@pytest.mark.parametrize(
    "value",
    [b'"\\ud800 alone"', b'"\\udc00\\ud800"', b"1e999999", b"-1E-99999"],
    ids=["lone-high-surrogate", "swapped-pair", "huge-exponent", "tiny-exponent"],
)
async def test_valid_json_that_jsonb_refuses_is_stored_as_its_exact_text(
    postgres_dsn: str, value: bytes
) -> None:
    good = consumed(audit_events()[:2])
    raw = good[0].raw[:-1] + b',"requestObject":{"patch":' + value + b"}}"
    odd = decode(raw, [("cluster", b"prod-eu")], topic="t", partition=0, offset=9)
    async with postgres_sink(postgres_dsn) as sink:
        await sink.write([good[0], odd, good[1]])
        await sink.flush()
    rows = await fetch(postgres_dsn, "SELECT audit_id, event, event_text FROM audit_events")
    assert len(rows) == 3, "the event jsonb refuses does not take its batch down"
    [kept] = [row for row in rows if row["event"] is None]
    assert kept["event_text"].encode() == raw
    assert kept["audit_id"] == audit_events()[0]["auditID"]


async def test_distinct_events_sharing_audit_id_stage_and_time_are_two_rows_a_repeat_is_one(
    postgres_dsn: str,
) -> None:
    first = copy.deepcopy(audit_events()[0])
    second = {**first, "verb": "delete"}
    async with postgres_sink(postgres_dsn) as sink:
        await sink.write(consumed([first, second, first]))
        await sink.flush()
    rows = await fetch(postgres_dsn, "SELECT verb FROM audit_events ORDER BY id")
    assert [row["verb"] for row in rows] == [first["verb"], "delete"]


async def test_replicas_starting_together_migrate_once(postgres_dsn: str) -> None:
    sinks = [postgres_sink(postgres_dsn) for _ in range(3)]
    await asyncio.gather(*(sink.open() for sink in sinks))
    for sink in sinks:
        await sink.close()
    async with postgres_sink(postgres_dsn):  # and a restart finds nothing to do
        pass
    versions = await fetch(postgres_dsn, "SELECT version, name FROM schema_migrations")
    assert [tuple(v) for v in versions] == [(1, "audit_events"), (2, "event_digest")]
    indexes = await fetch(
        postgres_dsn, "SELECT indexname FROM pg_indexes WHERE tablename = 'audit_events'"
    )
    assert {"audit_events_when", "audit_events_who", "audit_events_what"} <= {
        i["indexname"] for i in indexes
    }


async def test_a_schema_newer_than_the_program_is_refused(postgres_dsn: str) -> None:
    async with postgres_sink(postgres_dsn):
        pass
    connection = await asyncpg.connect(postgres_dsn)
    await connection.execute("INSERT INTO schema_migrations (version, name) VALUES (99, 'later')")
    await connection.close()
    with pytest.raises(ConfigError, match="version 99, newer than"):
        await postgres_sink(postgres_dsn).open()


async def test_the_password_comes_from_a_file_and_is_never_shown(
    postgres_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password = password_of(postgres_dsn)
    assert password
    secret_file = tmp_path / "password"
    secret_file.write_text(password + "\n")
    caplog.set_level(logging.DEBUG)
    sink = postgres_sink(
        without_password(postgres_dsn), "--postgres-password-file", str(secret_file)
    )
    async with sink:
        await sink.write(consumed(audit_events()[:3]))
        await sink.flush()
    assert len(await fetch(postgres_dsn, "SELECT id FROM audit_events")) == 3
    # A DSN that carries the password keeps it out of the settings' repr and the logs too.
    with_password = postgres_sink(postgres_dsn)
    async with with_password:
        pass
    for shown in (repr(sink.settings), repr(with_password.settings), caplog.text):
        assert password not in shown
    assert "writing to PostgreSQL at postgresql://postgres:***@127.0.0.1" in caplog.text


async def test_a_wrong_password_is_a_configuration_error_without_the_password(
    postgres_dsn: str, tmp_path: Path
) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text("not-the-password\n")
    sink = postgres_sink(postgres_dsn, "--postgres-password-file", str(secret_file))
    with pytest.raises(ConfigError, match="SQLSTATE 28P01") as raised:
        await sink.open()
    assert "not-the-password" not in str(raised.value)
    assert isinstance(raised.value.__cause__, asyncpg.InvalidPasswordError)


async def test_an_unreachable_server_is_an_error_the_runner_retries() -> None:
    dsn = f"postgresql://audit:hunter2@127.0.0.1:{unused_port()}/audit"
    with pytest.raises(SinkError, match="cannot connect to PostgreSQL") as raised:
        await postgres_sink(dsn, "--postgres-timeout", "5").open()
    assert raised.value.retriable
    assert "hunter2" not in str(raised.value)
    assert "postgresql://audit:***@127.0.0.1" in str(raised.value)


def test_the_dsn_is_required() -> None:
    with pytest.raises(ConfigError, match="--postgres-dsn"):
        build_settings(["--sink", "postgres"], {})


async def test_retention_deletes_rows_past_the_period_in_chunks(postgres_dsn: str) -> None:
    now = datetime.now(UTC)
    events = []
    for index, age in enumerate([40] * 23 + [29] * 5):
        event = copy.deepcopy(audit_events()[0])
        event["auditID"] = f"id-{index}"
        stamp = (now - timedelta(days=age)).isoformat().replace("+00:00", "Z")
        event["stageTimestamp"] = event["requestReceivedTimestamp"] = stamp
        events.append(event)
    flags = ("--postgres-retain-days", "30", "--postgres-retention-chunk", "5")
    async with postgres_sink(postgres_dsn) as plain:
        await plain.write(consumed(events))
        await plain.flush()
    # One chunk is one bounded statement.
    connection = await asyncpg.connect(postgres_dsn)
    try:
        status = await connection.execute(DELETE_CHUNK, now - timedelta(days=30), 5)
    finally:
        await connection.close()
    assert status == "DELETE 5"

    async def only_recent_rows_left() -> bool:
        [row] = await fetch(postgres_dsn, "SELECT count(*) FROM audit_events")
        return int(row[0]) == 5

    async with postgres_sink(postgres_dsn, *flags, "--postgres-retention-interval", "0.05"):
        await wait_until(only_recent_rows_left, timeout=30, what="retention")
    rows = await fetch(postgres_dsn, "SELECT audit_id FROM audit_events ORDER BY audit_id")
    assert [r["audit_id"] for r in rows] == sorted(f"id-{i}" for i in range(23, 28))


async def test_migrating_a_table_of_the_first_schema_keeps_every_row(postgres_dsn: str) -> None:
    first = (Path(migrations.__file__).parent / "0001_audit_events.sql").read_text()
    connection = await asyncpg.connect(postgres_dsn)
    try:
        await connection.execute(first)
        await connection.execute(CREATE_VERSIONS)
        await connection.execute("INSERT INTO schema_migrations VALUES (1, 'audit_events')")
        for index, event in enumerate(audit_events()[:5]):
            await connection.execute(
                "INSERT INTO audit_events (audit_id, stage_timestamp, event) "
                "VALUES ($1, now() + $2 * interval '1 s', $3::jsonb)",
                event["auditID"],
                index,
                orjson.dumps(event).decode(),
            )
    finally:
        await connection.close()
    async with postgres_sink(postgres_dsn):
        pass
    rows = await fetch(postgres_dsn, "SELECT event_digest, event FROM audit_events")
    assert len(rows) == 5
    assert all(row["event_digest"] and row["event"] for row in rows)
    assert len({row["event_digest"] for row in rows}) == 5


async def test_rows_the_database_refuses_for_good_are_named_and_the_rest_stored(
    postgres_dsn: str,
) -> None:
    events = consumed(audit_events())
    async with postgres_sink(postgres_dsn) as sink:
        # A column an operator narrowed: the database refuses longer values for good.
        connection = await asyncpg.connect(postgres_dsn)
        try:
            await connection.execute(
                "ALTER TABLE audit_events ALTER COLUMN username TYPE varchar(12)"
            )
        finally:
            await connection.close()
        await sink.write(events)
        with pytest.raises(EventsRefused) as refused:
            await sink.flush()
    long_names = [e for e in events if e.username is not None and len(e.username) > 12]
    assert long_names and len(long_names) < len(events)
    assert [event for event, _ in refused.value.refused] == long_names
    assert all("too long" in reason for _, reason in refused.value.refused)
    [count] = await fetch(postgres_dsn, "SELECT count(*) FROM audit_events")
    assert count[0] == len(events) - len(long_names)
