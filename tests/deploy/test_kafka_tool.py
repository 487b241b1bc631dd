"""deploy/local/kafka-tool runs the runbook's Kafka commands against the session broker, and
``deploy/local/kafka status --port`` finds a broker whatever its state directory."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.support.kafka import REPO

pytestmark = pytest.mark.integration
TOOL = REPO / "deploy" / "local" / "kafka-tool"


def kafka_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TOOL), *args], capture_output=True, text=True, timeout=120, check=False
    )


async def test_runbook_commands_read_dead_letters_and_move_a_group(
    kafka_bootstrap: str, new_topic: Callable[[int], Awaitable[str]]
) -> None:
    topic = await new_topic(1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for index in range(5):
            await producer.send_and_wait(
                topic, b"not json %d" % index, headers=[("reason", b"not JSON")]
            )
    finally:
        await producer.stop()

    # "Read them with their reasons", then "read from there" (partition and offset).
    dead = kafka_tool(
        "kafka-console-consumer.sh", "--bootstrap-server", kafka_bootstrap, "--topic", topic,
        "--from-beginning", "--property", "print.headers=true", "--max-messages", "5",
        "--timeout-ms", "30000",
    )  # fmt: skip
    assert dead.returncode == 0, dead.stderr
    lines = dead.stdout.splitlines()
    assert len(lines) == 5 and all("reason:not JSON" in line for line in lines), lines
    assert lines[0].endswith("not json 0")
    there = kafka_tool(
        "kafka-console-consumer", "--bootstrap-server", kafka_bootstrap, "--topic", topic,
        "--partition", "0", "--offset", "3", "--max-messages", "100",
        "--property", "print.offset=true", "--timeout-ms", "5000",
    )  # fmt: skip
    assert [line.split()[0] for line in there.stdout.splitlines()] == ["Offset:3", "Offset:4"]

    # "Move the group past the event".
    group = f"{topic}-group"
    moved = kafka_tool(
        "kafka-consumer-groups.sh", "--bootstrap-server", kafka_bootstrap, "--group", group,
        "--topic", f"{topic}:0", "--reset-offsets", "--to-offset", "4", "--execute",
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
    await consumer.start()
    try:
        assert await consumer.committed(TopicPartition(topic, 0)) == 4
    finally:
        await consumer.stop()

    unknown = kafka_tool("kafka-no-such-tool.sh")
    assert unknown.returncode == 2 and "unknown tool" in unknown.stderr


def test_status_with_port_alone_finds_the_session_broker(kafka_bootstrap: str) -> None:
    if os.environ.get("KAFKA_BOOTSTRAP"):
        pytest.skip("KAFKA_BOOTSTRAP names a broker this session did not start")
    port = kafka_bootstrap.rsplit(":", 1)[1]
    # The session's broker has a state directory of its own, not the default for its port.
    status = subprocess.run(
        [str(REPO / "deploy" / "local" / "kafka"), "status", "--port", port],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"running on 127.0.0.1:{port}" in status.stdout
    assert "state-" + port not in status.stdout  # the directory it really uses
