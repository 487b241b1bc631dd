"""The real relay as an operator runs it: ``python -m relay`` in a process, ready on /readyz."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

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


def relay_starter(
    processes: ProcessFactory, kafka_bootstrap: str, http: aiohttp.ClientSession
) -> StartRelay:
    """Starts relay processes on free ports with fresh topics; each waits until it is ready."""

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
