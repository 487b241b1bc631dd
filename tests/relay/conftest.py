"""Fixtures that run the real relay as an operator would: ``python -m relay`` in a process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest

from tests.support.kafka import unique_topic
from tests.support.net import unused_port, wait_until
from tests.support.processes import Process, ProcessFactory


@dataclass
class RunningRelay:
    process: Process
    url: str
    base: str
    topic: str
    dead_letter_topic: str
    bootstrap: str


StartRelay = Callable[..., Awaitable[RunningRelay]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture
def start_relay(
    processes: ProcessFactory, kafka_bootstrap: str, http: aiohttp.ClientSession
) -> StartRelay:
    """Starts a relay process on a free port with fresh topics; waits until /readyz says ready."""

    async def start(*args: str, bootstrap: str | None = None, ready: bool = True) -> RunningRelay:
        port = unused_port()
        topic = unique_topic("audit")
        bootstrap = bootstrap or kafka_bootstrap
        process = processes.start(
            "relay",
            "--insecure",
            "--listen", f"127.0.0.1:{port}",
            "--kafka-bootstrap", bootstrap,
            "--topic", topic,
            "--dead-letter-topic", f"{topic}.dead-letter",
            "--partitions", "3",
            *args,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"

        async def is_ready() -> bool:
            assert process.popen.poll() is None, f"relay exited:\n{process.stderr()}"
            try:
                async with http.get(f"{base}/readyz") as response:
                    return response.status == 200 or (not ready and response.status == 503)
            except aiohttp.ClientConnectionError:
                return False

        await wait_until(is_ready, timeout=30, what="relay /readyz")
        return RunningRelay(
            process, f"{base}/api/audits", base, topic, f"{topic}.dead-letter", bootstrap
        )

    return start
