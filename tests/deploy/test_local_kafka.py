"""deploy/local/kafka's arguments: a bad one is refused with a message before anything starts.

Starting, stopping and the status of one broker and of a cluster are exercised by every
integration test (``kafka_bootstrap``, ``broker_factory``, ``cluster_factory``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.kafka import KAFKA_SCRIPT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--brokers", "0"], "--brokers must be 1-9, got '0'"),
        (["--brokers", "three"], "--brokers must be 1-9"),
        (["--brokers", "3", "--broker", "4"], "--broker must be 1-3, got '4'"),
        (["--broker", "2"], "--broker must be 1-1"),
        (["--brokers", "3", "--port", "65531"], "--port must be 1-65530 for 3 broker(s)"),
        (["--port", "65535"], "--port must be 1-65534 for 1 broker(s)"),
        (["--set", "no-value"], "--set needs KEY=VALUE, got 'no-value'"),
        (["--bogus"], "unknown argument: --bogus"),
    ],
)
def test_bad_arguments_are_refused_with_a_message(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [str(KAFKA_SCRIPT), "status", "--state-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode in (1, 2)
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_status_of_a_cluster_that_never_ran_names_each_broker_and_exits_3(tmp_path: Path) -> None:
    args = ["status", "--brokers", "3", "--port", "39990", "--state-dir", str(tmp_path)]
    result = subprocess.run([str(KAFKA_SCRIPT), *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert result.stdout.splitlines() == [
        f"kafka: broker {node} not running on port {39989 + node}" for node in (1, 2, 3)
    ]


def test_usage_says_why_a_cluster_is_combined_nodes_and_how_ports_are_laid_out() -> None:
    usage = subprocess.run(
        [str(KAFKA_SCRIPT), "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    assert "3 JVMs instead of 6" in usage
    assert "a cluster of 3 takes N..N+5" in usage
