"""``audit-consumer query`` answers "who exec'd into pods", and says when --limit cut the
result: real processes against a real PostgreSQL store filled by the postgres sink."""

from __future__ import annotations

import csv
import io
import subprocess
from typing import Any

import pytest

from audit_common.samples import sample_events
from tests.consumers.sinks.test_postgres import consumed, postgres_sink
from tests.support.processes import run_module

EVENTS = sample_events(300, cluster="prod-eu", seed=27)


def execs() -> list[dict[str, Any]]:
    """The sample requests (one row each) that exec'd into a pod."""
    return [
        event
        for event in EVENTS
        if (event.get("objectRef") or {}).get("subresource") == "exec"
        and event["stage"] in ("ResponseComplete", "Panic")
    ]


@pytest.fixture
async def store(postgres_dsn: str) -> str:
    async with postgres_sink(postgres_dsn) as sink:
        await sink.write(consumed(EVENTS, "prod-eu"))
        await sink.flush()
    return postgres_dsn


def query(store: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_module("consumers", "query", "--postgres-dsn", store, *args)


def rows(result: subprocess.CompletedProcess[str]) -> list[dict[str, str]]:
    assert result.returncode == 0, result.stderr
    return list(csv.DictReader(io.StringIO(result.stdout)))


@pytest.mark.parametrize(
    "flags",
    [
        ["--resource", "pods/exec"],
        ["--subresource", "exec"],
        ["--resource", "pods", "--subresource", "exec"],
        ["--resource", "pods/exec", "--subresource", "exec"],
        ["--resource", "p*/e?ec"],
    ],
)
async def test_who_execd_into_pods(store: str, flags: list[str]) -> None:
    expected = execs()
    assert expected, "the samples hold exec requests"
    found = rows(query(store, *flags, "--limit", "0", "--format", "csv"))
    assert sorted(row["audit_id"] for row in found) == sorted(e["auditID"] for e in expected)
    assert {row["resource"] for row in found} == {"pods/exec"}


async def test_disagreeing_subresources_are_a_usage_error(store: str) -> None:
    result = query(store, "--resource", "pods/exec", "--subresource", "attach")
    assert result.returncode == 2
    assert "disagree" in result.stderr and "Traceback" not in result.stderr


async def test_a_result_cut_by_limit_says_so_on_stderr(store: str) -> None:
    everything = rows(query(store, "--limit", "0", "--format", "csv"))
    assert len(everything) > 5
    cut = query(store, "--limit", "5", "--format", "csv")
    assert rows(cut) == everything[:5]
    assert "newest 5 rows; more match" in cut.stderr and "--limit 0" in cut.stderr
    exact = query(store, "--limit", str(len(everything)), "--format", "csv")
    assert rows(exact) == everything
    assert exact.stderr == ""
    table = query(store, "--limit", "0")
    assert table.returncode == 0 and table.stderr == ""
    assert len(table.stdout.splitlines()) == len(everything) + 1
