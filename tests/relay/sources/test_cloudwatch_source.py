"""``audit-source cloudwatch`` end to end against moto's CloudWatch Logs server on 127.0.0.1,
with events put as EKS writes them: one audit event's JSON per log event, in the log group
/aws/eks/CLUSTER/cluster, streams kube-apiserver-audit-*, beside streams of other components."""

from __future__ import annotations

import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from audit_common.errors import SourceError
from relay.sources.cloudwatch import with_backoff
from tests.support.audit_log import identity, log_lines
from tests.support.kafka import read_topic, topic_size, unique_topic
from tests.support.net import unused_port, wait_until
from tests.support.processes import ProcessFactory, wait_for_exit_or_fail
from tests.support.sources import (
    SourceProcess,
    assert_nothing_lost_repeats_counted,
    assert_through_a_csv_group,
)

GROUP = "/aws/eks/edge-1/cluster"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture
def cloudwatch() -> Iterator[tuple[str, Any]]:
    """moto's server on a free port of 127.0.0.1, and a CloudWatch Logs client of it."""
    port = unused_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto keeps its accounts' state in the process, across servers: each test starts empty.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    client = boto3.client(
        "logs",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        yield endpoint, client
    finally:
        server.stop()


def put(client: Any, stream: str, lines: list[bytes]) -> None:
    """Log events as EKS puts them: the event's JSON as the message, stamped now."""
    now = int(time.time() * 1000)
    events = [{"timestamp": now, "message": line.decode().rstrip("\n")} for line in lines]
    client.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=events)


def cloudwatch_source(
    processes: ProcessFactory, bootstrap: str, topic: str, checkpoints: Path, endpoint: str
) -> SourceProcess:
    return SourceProcess(
        processes, bootstrap, topic, checkpoints, "cloudwatch", "--eks-cluster", "edge-1",
        "--endpoint-url", endpoint, "--region", "us-east-1", "--from-start", env=CREDENTIALS,
    )  # fmt: skip


async def test_streams_read_resumed_per_stream_and_new_ones_picked_up(
    kafka_bootstrap: str,
    processes: ProcessFactory,
    tmp_path: Path,
    cloudwatch: tuple[str, Any],
) -> None:
    endpoint, client = cloudwatch
    bootstrap, topic = kafka_bootstrap, unique_topic()
    client.create_log_group(logGroupName=GROUP)
    for stream in ("kube-apiserver-audit-a", "kube-apiserver-audit-b", "authenticator-x"):
        client.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    lines = log_lines(400, seed=6)
    put(client, "kube-apiserver-audit-a", lines[:150])
    put(client, "kube-apiserver-audit-b", [*lines[150:300], b"time=now level=info not an event"])
    put(client, "authenticator-x", [b"access granted", b"not an audit stream"])
    args = (processes, bootstrap, topic, tmp_path / "cp", endpoint)
    first = cloudwatch_source(*args)
    await read_topic(bootstrap, topic, 300, timeout=30)
    [dead] = await read_topic(bootstrap, f"{topic}.dead", 1, timeout=20)
    assert dict(dead.headers)["source"] == b"cloudwatch"
    assert wait_for_exit_or_fail(first.process, signal.SIGTERM, timeout=20) == 0

    put(client, "kube-apiserver-audit-a", lines[300:350])
    client.create_log_stream(logGroupName=GROUP, logStreamName="kube-apiserver-audit-c")
    put(client, "kube-apiserver-audit-c", lines[350:])
    second = cloudwatch_source(*args)
    records = await read_topic(bootstrap, topic, len(lines), timeout=30)
    assert Counter(identity(record.value) for record in records) == Counter(map(identity, lines))
    assert all(dict(record.headers)["source"] == b"cloudwatch" for record in records)
    assert await topic_size(bootstrap, f"{topic}.dead") == 1
    assert await second.metric("audit_source_events_repeated_total") == 0
    assert await second.metric("audit_source_events_read_total") == 100

    await assert_through_a_csv_group(processes, bootstrap, topic, tmp_path / "audit.csv", lines)


async def test_sigkill_while_streams_grow_and_restart_lose_nothing(
    kafka_bootstrap: str,
    processes: ProcessFactory,
    tmp_path: Path,
    cloudwatch: tuple[str, Any],
) -> None:
    """Killed while EKS keeps putting events into two streams, restarted from the per-stream
    tokens: every event reaches Kafka, and the repeats are no more than the metric counts."""
    endpoint, client = cloudwatch
    bootstrap, topic = kafka_bootstrap, unique_topic()
    client.create_log_group(logGroupName=GROUP)
    streams = ("kube-apiserver-audit-a", "kube-apiserver-audit-b")
    for stream in streams:
        client.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    lines = log_lines(2400, seed=8)
    batches = [lines[start : start + 100] for start in range(0, len(lines), 100)]
    args = (processes, bootstrap, topic, tmp_path / "cp", endpoint)
    first = cloudwatch_source(*args)
    for number, batch in enumerate(batches[:12]):
        put(client, streams[number % 2], batch)
    await wait_until(lambda: topic_size(bootstrap, topic), timeout=20, what="first events")
    first.process.signal(signal.SIGKILL)
    first.process.wait(10)
    for number, batch in enumerate(batches[12:18]):
        put(client, streams[number % 2], batch)
    second = cloudwatch_source(*args)
    for number, batch in enumerate(batches[18:]):
        put(client, streams[number % 2], batch)
    await assert_nothing_lost_repeats_counted(bootstrap, topic, lines, second, timeout=40)
    assert wait_for_exit_or_fail(second.process, signal.SIGTERM, timeout=20) == 0


def throttled() -> ClientError:
    error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
    return ClientError(error, "GetLogEvents")  # type: ignore[arg-type]


async def test_throttling_is_backed_off_and_counted_and_access_denied_stops() -> None:
    """Pure logic: the retry rule of every call the source makes."""
    errors: list[str] = []
    answers: list[Exception | dict[str, Any]] = [throttled(), throttled(), {"events": []}]

    async def call() -> dict[str, Any]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await with_backoff(call, errors.append, "GetLogEvents", max_backoff=0.01) == {
        "events": []
    }
    assert errors == ["throttled", "throttled"]

    async def denied() -> dict[str, Any]:
        error = {"Error": {"Code": "AccessDeniedException", "Message": "no"}}
        raise ClientError(error, "GetLogEvents")  # type: ignore[arg-type]

    with pytest.raises(SourceError, match="AccessDeniedException"):
        await with_backoff(denied, errors.append, "GetLogEvents", max_backoff=0.01)
