"""Fixtures for the consumer tests: consumer processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from tests.support.processes import Process, ProcessFactory

StartConsumer = Callable[..., Process]


@pytest.fixture
def start_consumer(processes: ProcessFactory, kafka_bootstrap: str) -> StartConsumer:
    """Starts ``python -m consumers`` against the session broker with a fresh group by default."""

    def start(*args: str, group: str | None = None, env: dict[str, str] | None = None) -> Process:
        group = group or f"group-{uuid.uuid4().hex[:8]}"
        common = ["--kafka-bootstrap", kafka_bootstrap, "--group", group]
        return processes.start("consumers", *common, *args, env=env)

    return start
