"""Liveness and readiness of audit-consumer: the progress clock, and real consumers that stall,
idle, start and stop against the real broker."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import aiohttp

from audit_common.kafka_connection import KafkaConnection
from consumers.events import ConsumedEvent
from consumers.health import Health
from consumers.metrics import ConsumerMetrics, MetricsServer
from consumers.runner import Runner
from consumers.settings import ConsumerSettings
from consumers.sinks import Sink
from tests.consumers.conftest import StartConsumer
from tests.consumers.http_receiver import Answer, Received, Receiver
from tests.consumers.messages import produce_events, with_fresh_ids
from tests.consumers.probes import probe
from tests.consumers.test_postgres_end_to_end import postgres_env
from tests.support.net import unused_port, wait_until
from tests.support.postgres import LocalPostgres, create_database
from tests.support.processes import wait_for_exit_or_fail


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_consumer_stays_live_however_long_it_idles() -> None:
    clock = Clock()
    health = Health(stall_timeout=5, clock=clock)
    health.joined()
    clock.now += 3600
    assert health.liveness() == (True, {"status": "ok"})
    health.idle()
    clock.now += 3600
    assert health.liveness()[0]


def test_work_waiting_past_the_stall_timeout_is_not_live_until_a_commit() -> None:
    clock = Clock()
    health = Health(stall_timeout=5, clock=clock)
    health.idle()
    health.waiting("unable to write to the sink (3 failures): refused")
    clock.now += 5
    assert health.liveness()[0], "at the timeout itself, still live"
    clock.now += 1
    live, answer = health.liveness()
    assert not live
    assert answer["status"] == "stalled"
    assert "no progress for 6 s" in answer["reason"]
    assert answer["reason"].endswith("while unable to write to the sink (3 failures): refused")
    health.progressed()  # a batch committed: the clock starts again, work still waits
    assert health.liveness()[0]
    clock.now += 6
    assert not health.liveness()[0]
    health.idle()
    assert health.liveness()[0]


def test_readiness_from_start_to_stop() -> None:
    health = Health(stall_timeout=5)
    assert health.readiness() == (False, {"status": "not ready", "reason": "starting"})
    health.starting("cannot open the sink: disk full")
    assert health.readiness()[1]["reason"] == "cannot open the sink: disk full"
    health.joined()
    assert health.readiness() == (True, {"status": "ready"})
    health.kafka_reachable("KafkaConnectionError: connection refused")
    reason = health.readiness()[1]["reason"]
    assert reason == "Kafka cannot be reached: KafkaConnectionError: connection refused"
    health.kafka_reachable(None)
    assert health.readiness()[0]
    health.stopping()
    assert health.readiness() == (False, {"status": "not ready", "reason": "stopping"})


async def test_a_failing_sink_with_events_waiting_is_not_live_while_an_idle_consumer_is(
    kafka_bootstrap: str,
    new_topic: Any,
    start_consumer: StartConsumer,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    idle_port, failing_port = unused_port(), unused_port()
    idle = start_consumer(
        "--sink", "jsonl", "--topic", await new_topic(1), "--output", str(tmp_path / "idle"),
        "--metrics-listen", f"127.0.0.1:{idle_port}", "--stall-timeout", "2",
    )  # fmt: skip
    idle_base = f"http://127.0.0.1:{idle_port}"

    async def ready(base: str) -> bool:
        return (await probe(http, f"{base}/readyz"))[0] == 200

    await wait_until(lambda: ready(idle_base), timeout=30, what="the idle consumer ready")

    accepting = asyncio.Event()

    def respond(received: Received) -> Answer:
        return Answer(200) if accepting.is_set() else Answer(503, body=b"overloaded")

    topic = await new_topic(1)
    await produce_events(kafka_bootstrap, topic, with_fresh_ids(5))
    async with Receiver(respond=respond) as receiver:
        failing = start_consumer(
            "--sink", "http", "--topic", topic, "--http-url", receiver.url,
            "--metrics-listen", f"127.0.0.1:{failing_port}", "--stall-timeout", "2",
            "--retry-backoff", "0.1", "--retry-backoff-max", "0.2",
        )  # fmt: skip
        failing_base = f"http://127.0.0.1:{failing_port}"

        async def stalled() -> bool:
            status, _ = await probe(http, f"{failing_base}/healthz")
            assert (await probe(http, f"{idle_base}/healthz"))[0] == 200, "idle is live"
            return status == 503

        await wait_until(stalled, timeout=30, what="the failing consumer not live")
        status, answer = await probe(http, f"{failing_base}/healthz")
        assert status == 503 and answer["status"] == "stalled", answer
        assert "unable to write to the sink" in answer["reason"], answer
        assert "503" in answer["reason"], answer
        assert await ready(failing_base), "a stalled sink does not make it unready"

        accepting.set()  # the destination recovers: the batch is written and committed
        await wait_until(
            lambda: probe_status(http, f"{failing_base}/healthz", 200),
            timeout=30,
            what="the recovered consumer live again",
        )
        assert sum(len(request.lines()) for request in receiver.accepted()) == 5
        assert wait_for_exit_or_fail(failing, signal.SIGTERM, 20) == 0
    assert wait_for_exit_or_fail(idle, signal.SIGTERM, 20) == 0


async def probe_status(http: aiohttp.ClientSession, url: str, status: int) -> bool:
    return (await probe(http, url))[0] == status


async def test_not_ready_while_the_sink_cannot_be_opened(
    new_topic: Any,
    start_consumer: StartConsumer,
    http: aiohttp.ClientSession,
    postgres_factory: Callable[[], LocalPostgres],
    tmp_path: Path,
) -> None:
    # The store is down when the consumer starts (a settings mistake would exit 2 instead).
    server = postgres_factory()
    dsn = await create_database(server.admin_dsn)
    server.stop()
    port = unused_port()
    consumer = start_consumer(
        "--sink", "postgres", "--topic", await new_topic(1),
        "--metrics-listen", f"127.0.0.1:{port}", "--stall-timeout", "1",
        "--retry-backoff", "0.1", "--retry-backoff-max", "0.2",
        env=postgres_env(dsn, tmp_path),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    async def cannot_open() -> bool:
        status, answer = await probe(http, f"{base}/readyz")
        return status == 503 and answer["reason"].startswith("cannot open the sink")

    await wait_until(cannot_open, timeout=30, what="/readyz: cannot open the sink")
    assert f":{server.port}" in (await probe(http, f"{base}/readyz"))[1]["reason"]
    # No work is known to wait before the sink opens: a restart would not open it either.
    assert (await probe(http, f"{base}/healthz"))[0] == 200
    server.start()
    await wait_until(
        lambda: probe_status(http, f"{base}/readyz", 200), timeout=30, what="ready once opened"
    )
    assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0


async def test_not_ready_while_kafka_does_not_answer(
    start_consumer: StartConsumer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    held: list[asyncio.StreamWriter] = []  # connections accepted and never answered

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    kafka_port = silent.sockets[0].getsockname()[1]
    port = unused_port()
    async with silent:
        consumer = start_consumer(
            "--sink", "jsonl", "--output", str(tmp_path / "out.jsonl"),
            "--metrics-listen", f"127.0.0.1:{port}",
            "--kafka-bootstrap", f"127.0.0.1:{kafka_port}",  # the last one counts
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        await wait_until(
            lambda: probe_status(http, f"{base}/readyz", 503), timeout=30, what="/readyz 503"
        )
        assert (await probe(http, f"{base}/readyz"))[1]["reason"] == "connecting to Kafka"
        assert (await probe(http, f"{base}/healthz"))[0] == 200
        consumer.close()


class GatedSink(Sink):
    """Holds every write until ``gate`` is set."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.writing = asyncio.Event()

    @classmethod
    def from_args(cls, args: Any) -> Self:
        return cls()

    async def open(self) -> None:
        pass

    async def write(self, events: Sequence[ConsumedEvent]) -> None:
        self.writing.set()
        await self.gate.wait()

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass


@asynccontextmanager
async def served_runner(
    bootstrap: str, topic: str, sink: Sink
) -> AsyncIterator[tuple[Runner, str, asyncio.Task[bool]]]:
    """A runner and its probes in this process, as ``consumers.__main__`` wires them."""
    settings = ConsumerSettings(
        sink=sink.name,
        kafka=KafkaConnection(bootstrap=bootstrap),
        topic=topic,
        group=f"group-{uuid.uuid4().hex[:8]}",
    )
    metrics = ConsumerMetrics()
    runner = Runner(settings, sink, metrics)
    port = unused_port()
    async with MetricsServer(metrics, runner.health, "127.0.0.1", port):
        task = asyncio.create_task(runner.run())
        try:
            yield runner, f"http://127.0.0.1:{port}", task
        finally:
            runner.stop()
            await asyncio.wait_for(asyncio.shield(task), 30)


async def test_not_ready_from_the_stop_request_on(
    kafka_bootstrap: str, new_topic: Any, http: aiohttp.ClientSession
) -> None:
    topic = await new_topic(1)
    sink = GatedSink()
    async with served_runner(kafka_bootstrap, topic, sink) as (runner, base, task):
        await wait_until(
            lambda: probe_status(http, f"{base}/readyz", 200), timeout=30, what="ready"
        )
        await produce_events(kafka_bootstrap, topic, with_fresh_ids(3))
        await asyncio.wait_for(sink.writing.wait(), 30)
        runner.stop()  # as SIGTERM does, while the batch in hand is being written
        status, answer = await probe(http, f"{base}/readyz")
        assert (status, answer) == (503, {"status": "not ready", "reason": "stopping"})
        assert not task.done()
        sink.gate.set()
        assert await asyncio.wait_for(task, 30), "the batch in hand was written and committed"
