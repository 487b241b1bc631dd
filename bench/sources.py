"""``audit-source``: events read and published per core of the source process, per kind.

Writes an audit.log of ``--events`` sample events (as lumberjack leaves it: half in a gzipped
rotated file, half in the live file), puts the same events in moto's CloudWatch Logs server
(on 127.0.0.1, as EKS writes them: two kube-apiserver-audit-* streams), in an Event Hub played
by a second local broker's SASL_SSL listener (as AKS's diagnostic setting writes them: documents
of 50 kube-audit records, over two partitions) and, as GKE's audit entries (LogEntry JSON, as a
log sink publishes them), in the Pub/Sub emulator (deploy/local/pubsub); runs ``audit-source``
on each with ``--from-start`` against a real broker (``KAFKA_BOOTSTRAP``, or one
deploy/local/kafka starts) until Kafka holds every event. A rate is per CPU second of the source
process (user + system, from /proc): the brokers', moto's and the emulator's CPU is left out. The
baseline, measured in the same run in this process, is ``build_batch`` alone on the same events
as a webhook's EventList items, redacting as the sources do by default: what the webhook's path
pays for each event too.

    .venv/bin/python -m bench.sources [--events 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer
from msgspec import Raw

from audit_common.samples import sample_events
from relay.events.build import build_batch
from relay.events.redact import DEFAULT_RESOURCES, RedactionSettings, Redactor
from tests.support.audit_log import LumberjackLog, log_lines
from tests.support.eventhubs import documents, event_hubs_broker, put, source_flags
from tests.support.kafka import LocalBroker, create_topic, topic_size, unique_topic
from tests.support.net import unused_port, unused_port_pair
from tests.support.pubsub import PROJECT, LocalPubSub, as_log_entry

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def build_rate(lines: list[bytes]) -> float:
    """Events per CPU second of ``build_batch`` alone on the lines as the webhook's EventList
    items (no kind and apiVersion), redacting as the sources do by default."""
    redactor = Redactor(RedactionSettings().hmac_key, DEFAULT_RESOURCES)
    envelope = len(b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",')
    items = [Raw(b"{" + line[envelope:].rstrip(b"\n")) for line in lines]
    started = time.process_time()
    for start in range(0, len(items), 1000):
        build_batch(
            items[start : start + 1000],
            "audit.k8s.io/v1",
            "bench",
            fits=lambda value, key, headers: True,
            dead_letter_limit=1 << 19,
            transform=redactor.redact,
            may_transform=redactor.may_redact,
        )
    return len(lines) / (time.process_time() - started)


async def source_rate(bootstrap: str, work: Path, count: int, *args: str) -> tuple[float, float]:
    """Events per CPU second of an ``audit-source`` process, and per wall second, from its
    start until Kafka holds ``count`` events."""
    topic = unique_topic("bench")
    argv = [
        sys.executable, "-m", "relay.sources.cli", *args, "--from-start",
        "--checkpoint-dir", str(work / f"cp-{topic}"), "--kafka-bootstrap", bootstrap,
        "--topic", topic, "--listen", f"127.0.0.1:{unused_port()}", "--poll-interval", "0.05",
    ]  # fmt: skip
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    process = await asyncio.create_subprocess_exec(*argv, env=env, stderr=subprocess.DEVNULL)
    try:
        # From the first record on: the interpreter's start and imports are left out.
        first = await wait_for_records(bootstrap, topic, 1)
        cpu, wall = cpu_seconds(process.pid), time.monotonic()
        await wait_for_records(bootstrap, topic, count)
        events = count - first
        return events / (cpu_seconds(process.pid) - cpu), events / (time.monotonic() - wall)
    finally:
        process.terminate()
        await process.wait()


async def wait_for_records(bootstrap: str, topic: str, count: int) -> int:
    """How many records ``topic`` holds once it holds ``count`` or more."""
    while (size := await topic_size(bootstrap, topic)) < count:  # noqa: ASYNC110 - Kafka's
        await asyncio.sleep(0.1)
    return size


def put_cloudwatch(endpoint: str, lines: list[bytes]) -> None:
    client = boto3.client(
        "logs", region_name="us-east-1", endpoint_url=endpoint,
        aws_access_key_id="bench", aws_secret_access_key="bench",
    )  # fmt: skip
    group = "/aws/eks/bench/cluster"
    client.create_log_group(logGroupName=group)
    now = int(time.time() * 1000)
    for index, stream in enumerate(("kube-apiserver-audit-a", "kube-apiserver-audit-b")):
        client.create_log_stream(logGroupName=group, logStreamName=stream)
        mine = lines[index::2]
        for start in range(0, len(mine), 500):
            events = [
                {"timestamp": now, "message": line.decode().rstrip("\n")}
                for line in mine[start : start + 500]
            ]
            client.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)


async def pubsub_subscription(emulator: LocalPubSub, count: int) -> str:
    """The subscription of a topic holding ``count`` sample events as GKE's audit entries."""
    topic = f"projects/{PROJECT}/topics/bench"
    subscription = f"projects/{PROJECT}/subscriptions/bench"
    await emulator.create(topic, subscription, 60)
    events = sample_events(count, seed=26)
    await emulator.publish(topic, [as_log_entry(event, n) for n, event in enumerate(events)])
    return subscription


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50000)
    count = parser.parse_args().events
    lines = log_lines(count, seed=26)
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        broker = None
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
        if not bootstrap:
            broker = LocalBroker(unused_port_pair(), work / "kafka")
            broker.start()
            bootstrap = broker.bootstrap
        port = unused_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        moto.start()
        hubs = event_hubs_broker(work / "eventhubs")
        hubs.start()
        emulator = LocalPubSub(unused_port(), work / "pubsub")
        emulator.start()
        try:
            baseline = build_rate(lines)
            log = LumberjackLog(work / "audit.log")
            log.write(b"".join(lines[: count // 2]))
            log.rotate(compress=True)
            log.write(b"".join(lines[count // 2 :]))
            file_cpu, file_wall = await source_rate(
                bootstrap, work, count, "file", "--path", str(log.path)
            )
            put_cloudwatch(f"http://127.0.0.1:{port}", lines)
            cloud_cpu, cloud_wall = await source_rate(
                bootstrap, work, count, "cloudwatch", "--eks-cluster", "bench",
                "--endpoint-url", f"http://127.0.0.1:{port}", "--region", "us-east-1",
            )  # fmt: skip
            hub = unique_topic("hub")
            await create_topic(hubs.bootstrap, hub, 2)
            await put(hubs, hub, documents(lines, 50), 2)
            hubs_cpu, hubs_wall = await source_rate(
                bootstrap, work, count, *source_flags(hubs, hub, work / "connection-string")
            )
            subscription = await pubsub_subscription(emulator, count)
            pubsub_cpu, pubsub_wall = await source_rate(
                bootstrap, work, count, "pubsub", "--subscription", subscription,
                "--pubsub-endpoint", emulator.endpoint, "--pubsub-ack-deadline", "60",
            )  # fmt: skip
        finally:
            emulator.stop()
            hubs.stop()
            moto.stop()
            if broker is not None:
                broker.stop()
    print(f"{count} sample events, {sum(map(len, lines)) / count:.0f} bytes each on average")
    print(f"baseline build_batch alone:   {baseline:9.0f} events/s per core")
    for kind, cpu, wall in (
        ("file", file_cpu, file_wall),
        ("cloudwatch", cloud_cpu, cloud_wall),
        ("eventhubs", hubs_cpu, hubs_wall),
        ("pubsub", pubsub_cpu, pubsub_wall),
    ):
        print(
            f"audit-source {kind:<10}:     {cpu:9.0f} events/s per core "
            f"({cpu / baseline:.2f} x baseline), {wall:.0f} events/s wall"
        )


if __name__ == "__main__":
    asyncio.run(main())
