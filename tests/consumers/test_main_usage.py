"""What ``audit-consumer`` tells a new user: its subcommands in --help and when run bare, and a
warning when filters are tried under the default group (real processes)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Awaitable, Callable

import pytest

from tests.support.net import wait_until
from tests.support.processes import ProcessFactory, run_module, wait_for_exit_or_fail


def consumer(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("consumers", *args)


def test_help_and_a_bare_run_list_the_subcommands() -> None:
    helped = consumer("--help")
    assert helped.returncode == 0
    bare = consumer()
    assert bare.returncode == 2
    assert "Traceback" not in bare.stderr
    assert "--sink is required" in bare.stderr
    for text in (helped.stdout, bare.stderr):
        assert "audit-consumer query [flags]" in text
        assert "audit-consumer rules test [flags]" in text
        assert "subcommands:" in text


WARNING = "filters under the default group audit-jsonl"


@pytest.mark.integration
@pytest.mark.parametrize("group", [None, "audit-try-filters"])
async def test_filters_under_the_default_group_warn(
    group: str | None,
    processes: ProcessFactory,
    kafka_bootstrap: str,
    new_topic: Callable[[int], Awaitable[str]],
) -> None:
    topic = await new_topic(1)
    flags = ["--group", group] if group else []
    process = processes.start(
        "consumers",
        *("--sink", "jsonl", "--kafka-bootstrap", kafka_bootstrap, "--topic", topic),
        *("--include", "verb=delete", *flags),
    )

    async def consuming() -> bool:
        assert process.popen.poll() is None, process.stderr()
        return "consuming" in process.stderr()

    await wait_until(consuming, timeout=30, what="consumer in its group")
    assert wait_for_exit_or_fail(process, signal.SIGTERM, 30) == 0
    assert (WARNING in process.stderr()) == (group is None), process.stderr()
