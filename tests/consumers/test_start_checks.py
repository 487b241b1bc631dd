"""Configuration errors are found at start: every sink's bad settings stop a real consumer
process with exit 2 and the reason on stderr, before it joins its group (no traceback)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.consumers.conftest import StartConsumer

pytestmark = pytest.mark.integration


def bad_settings(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """Per sink: flags that cannot work, and what the message must say."""
    token = tmp / "token"  # written by the test
    return {
        "http credentials twice": (
            [
                "--sink",
                "http",
                "--http-url",
                "http://user:pw@127.0.0.1:9/bulk",
                "--http-token-file",
                str(token),
            ],
            "--http-url carries credentials",
        ),
        "http TLS file": (
            [
                "--sink",
                "http",
                "--http-url",
                "https://127.0.0.1:9/",
                "--http-ca-file",
                str(tmp / "missing-ca.pem"),
            ],
            "cannot load the http sink's TLS files",
        ),
        "csv directory": (
            ["--sink", "csv", "--output", str(tmp / "no-such-dir" / "audit.csv")],
            "does not exist",
        ),
        "jsonl directory": (["--sink", "jsonl", "--output", str(tmp)], "is a directory"),
        "postgres dsn": (
            ["--sink", "postgres", "--postgres-dsn", "postgresql://a@127.0.0.1/x?sslmode=bogus"],
            "sslmode",
        ),
        "alerts topic": (["--sink", "alerts", "--alerts-topic", "TOPIC"], "--alerts-topic"),
    }


CASES = sorted(bad_settings(Path("/nonexistent")))


async def groups(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {group[0] for group in await admin.list_consumer_groups()}
    finally:
        await admin.close()


@pytest.mark.parametrize("case", CASES)
async def test_bad_sink_settings_exit_2_before_joining_the_group(
    case: str,
    tmp_path: Path,
    start_consumer: StartConsumer,
    new_topic: Callable[[int], Awaitable[str]],
    kafka_bootstrap: str,
) -> None:
    topic = await new_topic(1)
    (tmp_path / "token").write_text("s3cr3t\n")
    flags, reason = bad_settings(tmp_path)[case]
    flags = [topic if flag == "TOPIC" else flag for flag in flags]
    group = f"group-{uuid.uuid4().hex[:8]}"
    consumer = start_consumer("--topic", topic, *flags, group=group)
    assert consumer.wait(30) == 2, consumer.stderr()
    stderr = consumer.stderr()
    assert reason in stderr, stderr
    assert "Traceback" not in stderr, stderr
    assert "s3cr3t" not in stderr and "pw@" not in stderr
    assert "consuming" not in stderr, stderr
    assert group not in await groups(kafka_bootstrap)
