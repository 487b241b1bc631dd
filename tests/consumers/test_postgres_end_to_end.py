"""``--sink postgres`` as operators run it: the real relay, Kafka, consumer processes and a real
PostgreSQL server, which a test also stops and starts mid-stream."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from relay.events.build import invalid_reason
from tests.consumers.conftest import StartConsumer
from tests.consumers.messages import produce_events, with_fresh_ids
from tests.support.events import audit_events, event_list
from tests.support.kafka import committed_and_end
from tests.support.net import wait_until
from tests.support.postgres import LocalPostgres, create_database, password_of, without_password
from tests.support.processes import Process, wait_for_exit_or_fail

FAST_RETRIES = ("--retry-backoff", "0.1", "--retry-backoff-max", "0.5")


def postgres_env(dsn: str, tmp_path: Path) -> dict[str, str]:
    """The DSN in the environment and the password in a file, as a Kubernetes Secret mounts it."""
    password = password_of(dsn)
    assert password
    secret = tmp_path / "postgres-password"
    secret.write_text(password + "\n")
    return {
        "AUDIT_CONSUMER_POSTGRES_DSN": without_password(dsn),
        "AUDIT_CONSUMER_POSTGRES_PASSWORD_FILE": str(secret),
    }


async def table(dsn: str, query: str = "SELECT audit_id FROM audit_events") -> list[Any]:
    connection = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await connection.fetch(query)]
    except asyncpg.UndefinedTableError:
        return []  # the consumer has not migrated yet
    finally:
        await connection.close()


async def wait_for_rows(dsn: str, count: int, consumer: Process, timeout: float = 60) -> None:
    async def enough() -> bool:
        assert consumer.popen.poll() is None, f"consumer exited:\n{consumer.stderr()[-3000:]}"
        return len(await table(dsn)) >= count

    await wait_until(enough, timeout=timeout, interval=0.2, what=f"{count} rows")


async def committed_at_least(
    bootstrap: str, group: str, topic: str, partitions: int, count: int
) -> bool:
    committed, _ = await committed_and_end(bootstrap, group, topic, partitions)
    return committed >= count


async def test_every_event_from_a_post_to_the_table(
    start_relay: Any,
    start_consumer: StartConsumer,
    http: aiohttp.ClientSession,
    postgres_dsn: str,
    tmp_path: Path,
) -> None:
    relay = await start_relay()
    publishable = [e for e in audit_events() if invalid_reason(e) is None]
    async with http.post(relay.url, data=event_list(audit_events())) as response:
        assert response.status == 200
    expected = publishable  # distinct events sharing a key included
    env = postgres_env(postgres_dsn, tmp_path)
    env["AUDIT_CONSUMER_DEAD_LETTER_TOPIC"] = relay.dead_letter_topic
    consumer = start_consumer("--sink", "postgres", "--topic", relay.topic, group="pg", env=env)
    await wait_for_rows(postgres_dsn, len(expected), consumer)
    assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0
    rows = await table(
        postgres_dsn, "SELECT audit_id, stage, verb, username, resource, cluster FROM audit_events"
    )
    assert sorted(rows) == sorted(
        (
            e["auditID"],
            e["stage"],
            e["verb"],
            e["user"]["username"],
            (e.get("objectRef") or {}).get("resource"),
            "default",  # the relay's --cluster
        )
        for e in expected
    )
    committed, end = await committed_and_end(relay.bootstrap, "pg", relay.topic, 3)
    assert committed == end == len(publishable)
    password = password_of(postgres_dsn)
    assert password and password not in consumer.stderr()
    assert "Traceback" not in consumer.stderr()


async def test_redelivery_adds_no_row(
    kafka_bootstrap: str,
    new_topic: Callable[[int], Any],
    start_consumer: StartConsumer,
    postgres_dsn: str,
    tmp_path: Path,
) -> None:
    topic = await new_topic(2)
    events = with_fresh_ids(600)
    await produce_events(kafka_bootstrap, topic, events)
    env = postgres_env(postgres_dsn, tmp_path)
    # No duplicate suppression in the consumer: the table's unique key alone must do it.
    flags = ["--sink", "postgres", "--topic", topic, "--dedupe-window", "0", "--max-batch", "25"]
    first = start_consumer(*flags, group="pg", env=env)
    await wait_for_rows(postgres_dsn, 200, first)
    first.popen.kill()  # mid-stream: a batch may be in the table but its offsets not committed
    first.wait(10)
    # The apiserver re-sent a batch; only the restarted consumer can commit past it.
    await produce_events(kafka_bootstrap, topic, events[:100])
    again = start_consumer(*flags, group="pg", env=env)
    await wait_for_rows(postgres_dsn, 600, again)
    await wait_until(
        lambda: committed_at_least(kafka_bootstrap, "pg", topic, 2, 700),
        timeout=60,
        interval=0.2,
        what="the restarted consumer committed everything",
    )
    assert wait_for_exit_or_fail(again, signal.SIGTERM, 20) == 0
    committed, end = await committed_and_end(kafka_bootstrap, "pg", topic, 2)
    assert committed == end == 700
    # Another group reads the whole topic once more into the same table.
    other = start_consumer(*flags, group="pg-other", env=env)
    await wait_until(
        lambda: committed_at_least(kafka_bootstrap, "pg-other", topic, 2, 700),
        timeout=60,
        interval=0.2,
        what="the second group consumed everything",
    )
    assert wait_for_exit_or_fail(other, signal.SIGTERM, 20) == 0
    rows = await table(postgres_dsn)
    assert sorted(rows) == sorted((e["auditID"],) for e in events)


async def test_the_store_down_mid_stream_loses_nothing(
    kafka_bootstrap: str,
    new_topic: Callable[[int], Any],
    start_consumer: StartConsumer,
    postgres_factory: Callable[[], LocalPostgres],
    tmp_path: Path,
) -> None:
    server = postgres_factory()
    dsn = await create_database(server.admin_dsn)
    topic = await new_topic(3)
    events = with_fresh_ids(1000)
    await produce_events(kafka_bootstrap, topic, events[:500])
    flags = ["--sink", "postgres", "--topic", topic, "--max-batch", "50", *FAST_RETRIES]
    env = {**postgres_env(dsn, tmp_path), "AUDIT_CONSUMER_POSTGRES_TIMEOUT": "5"}
    consumer = start_consumer(*flags, group="pg", env=env)
    await wait_for_rows(dsn, 500, consumer)
    await wait_until(
        lambda: committed_at_least(kafka_bootstrap, "pg", topic, 3, 500), timeout=30, what="commit"
    )

    server.stop()
    await produce_events(kafka_bootstrap, topic, events[500:])
    await wait_until(
        lambda: consumer.stderr().count("cannot write to the sink") >= 3,
        timeout=30,
        what="the consumer failing to write",
    )
    # While the store is down, nothing past what it holds is committed.
    committed, end = await committed_and_end(kafka_bootstrap, "pg", topic, 3)
    assert (committed, end) == (500, 1000)

    server.start()
    await wait_for_rows(dsn, 1000, consumer)
    assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0
    assert sorted(await table(dsn)) == sorted((e["auditID"],) for e in events)
    committed, end = await committed_and_end(kafka_bootstrap, "pg", topic, 3)
    assert committed == end == 1000
    assert "could write to the sink after" in consumer.stderr()
