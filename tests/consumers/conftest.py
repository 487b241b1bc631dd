"""Fixtures for the consumer tests: the relay's own fixtures, and consumer processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

# The end-to-end tests start the real relay exactly as its own tests do.
from tests.relay.conftest import http, start_relay
from tests.support.processes import Process, ProcessFactory

__all__ = ["http", "start_consumer", "start_relay"]

StartConsumer = Callable[..., Process]


@pytest.fixture
def start_consumer(processes: ProcessFactory, kafka_bootstrap: str) -> StartConsumer:
    """Starts ``python -m consumers`` against the session broker with a fresh group by default."""

    def start(*args: str, group: str | None = None, env: dict[str, str] | None = None) -> Process:
        group = group or f"group-{uuid.uuid4().hex[:8]}"
        common = ["--kafka-bootstrap", kafka_bootstrap, "--group", group]
        return processes.start("consumers", *common, *args, env=env)

    return start
