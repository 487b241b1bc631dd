"""Fixtures of the fault tests, and the summary of their figures at the end of the run."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.faults.harness import RESULTS


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that gives up on a request after 30 s, as kube-apiserver's webhook client does."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RESULTS:
        terminalreporter.section("fault tests: events sent | acknowledged | delivered | duplicated")
        for row in RESULTS:
            terminalreporter.write_line(row)
