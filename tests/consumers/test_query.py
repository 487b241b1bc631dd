"""``audit-consumer query`` against a real PostgreSQL store filled by the postgres sink."""

from __future__ import annotations

import csv
import io
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from audit_common.errors import ConfigError
from consumers.query import build_parser, fetch, glob_to_like, parse_time, settings_from_args
from tests.consumers.sinks.test_postgres import consumed, postgres_sink
from tests.support.events import audit_events
from tests.support.net import unused_port
from tests.support.postgres import password_of, without_password
from tests.support.processes import run_module

NOW = datetime(2024, 6, 4, 12, 0, tzinfo=UTC)
SERVICE_ACCOUNTS = {
    event["user"]["username"]
    for event in audit_events()
    if event["user"]["username"].startswith("system:serviceaccount:")
}


@pytest.fixture
async def store(postgres_dsn: str) -> str:
    """A store holding tests.support.events' events, as the sink wrote them from cluster 'prod'."""
    async with postgres_sink(postgres_dsn) as sink:
        await sink.write(consumed(audit_events(), "prod"))
        await sink.flush()
    return postgres_dsn


def query(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_module("consumers", "query", *args, env=env)


def matching(**wanted: Any) -> list[dict[str, Any]]:
    """The events of the store whose fields hold the wanted values; None means any."""
    found = []
    for event in audit_events():
        ref = event.get("objectRef") or {}
        fields = {
            "user": event["user"]["username"],
            "verb": event["verb"],
            "resource": ref.get("resource"),
            "namespace": ref.get("namespace"),
            "stage": event["stage"],
        }
        if all(fields[key] in values for key, values in wanted.items()):
            found.append(event)
    return found


async def test_who_deleted_the_secret(store: str) -> None:
    result = query("--postgres-dsn", store, "--resource", "secrets", "--verb", "delete")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        *("time", "cluster", "user", "verb", "resource", "namespace", "name", "code"),
        *("decision", "source_ips", "stage", "audit_id"),
    ]
    expected = matching(verb={"delete"}, resource={"secrets"}, stage={"ResponseComplete"})
    assert expected
    assert sorted(row.split() for row in rows) == sorted(
        [
            event["stageTimestamp"],
            "prod",
            "minikube-user",
            "delete",
            "secrets",
            "default",
            "example-secret",
            "200",
            "allow",
            ",".join(event["sourceIPs"]),
            "ResponseComplete",
            event["auditID"],
        ]
        for event in expected
    )


async def test_csv_and_json_hold_the_same_rows_newest_first(store: str) -> None:
    flags = ("--postgres-dsn", store, "--user", "minikube-user", "--verb", "create,delete")
    as_csv = query(*flags, "--format", "csv")
    as_json = query(*flags, "--format", "json")
    assert as_csv.returncode == as_json.returncode == 0, as_csv.stderr + as_json.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    objects = orjson.loads(as_json.stdout)
    expected = matching(
        user={"minikube-user"}, verb={"create", "delete"}, stage={"ResponseComplete"}
    )
    assert sorted(r["audit_id"] for r in rows) == sorted(e["auditID"] for e in expected)
    assert [o["audit_id"] for o in objects] == [r["audit_id"] for r in rows]
    times = [o["time"] for o in objects]
    assert times == sorted(times, reverse=True)
    by_id = {e["auditID"]: e for e in expected}
    for obj in objects:
        event = by_id[obj["audit_id"]]
        assert obj["time"] == event["stageTimestamp"]
        assert obj["code"] == event["responseStatus"]["code"]
        assert obj["source_ips"] == event["sourceIPs"]
        assert obj["name"] == event["objectRef"].get("name")


@pytest.mark.parametrize(
    ("flags", "wanted"),
    [
        (
            ["--user", "system:serviceaccount:*"],
            {"user": SERVICE_ACCOUNTS},
        ),
        (
            ["--namespace", "kube-*", "--resource", "pods"],
            {"namespace": {"kube-system", "kube-public"}, "resource": {"pods"}},
        ),
        (["--stage", "all", "--resource", "pods"], {"resource": {"pods"}, "stage": None}),
        (["--verb", "patch"], {"verb": {"patch"}}),
    ],
)
async def test_filters_find_what_the_store_holds(
    store: str, flags: list[str], wanted: dict[str, Any]
) -> None:
    args = build_parser({}).parse_args(["--postgres-dsn", store, "--limit", "0", *flags])
    records, _ = await fetch(settings_from_args(args, NOW))
    stage = wanted.pop("stage", {"ResponseComplete"})
    if stage is not None:
        wanted["stage"] = stage
    expected = matching(**wanted)
    assert expected
    assert sorted(r["audit_id"] for r in records) == sorted(e["auditID"] for e in expected)


async def test_since_and_until_bound_the_time_and_limit_keeps_the_newest(store: str) -> None:
    since, until = "2026-12-01T09:00:10Z", "2026-12-01T09:00:20Z"
    args = ["--postgres-dsn", store, "--since", since, "--until", until]
    records, _ = await fetch(settings_from_args(build_parser({}).parse_args(args), NOW))
    expected = [
        e
        for e in matching(stage={"ResponseComplete"})
        if datetime.fromisoformat(since)
        <= datetime.fromisoformat(e["stageTimestamp"])
        < datetime.fromisoformat(until)
    ]
    assert 2 <= len(expected) < len(matching(stage={"ResponseComplete"})) // 2
    assert sorted(r["audit_id"] for r in records) == sorted(e["auditID"] for e in expected)
    limited = build_parser({}).parse_args(["--postgres-dsn", store, "--limit", "1"])
    [newest], _ = await fetch(settings_from_args(limited, NOW))
    assert newest["stage_timestamp"] == max(
        datetime.fromisoformat(e["stageTimestamp"]) for e in matching(stage={"ResponseComplete"})
    )


def test_times_are_dates_datetimes_or_ages() -> None:
    assert parse_time("7d", NOW) == datetime(2024, 5, 28, 12, 0, tzinfo=UTC)
    assert parse_time("90m", NOW) == datetime(2024, 6, 4, 10, 30, tzinfo=UTC)
    assert parse_time("2024-06-01", NOW) == datetime(2024, 6, 1, tzinfo=UTC)
    assert parse_time("2024-06-01T10:00:00+02:00", NOW) == datetime(2024, 6, 1, 8, tzinfo=UTC)
    with pytest.raises(ConfigError, match="last tuesday"):
        parse_time("last tuesday", NOW)
    for too_far in ("99999999999d", "99999999999999999999w"):
        with pytest.raises(ConfigError, match="before the year 1"):
            parse_time(too_far, NOW)


def test_globs_become_like_patterns_with_like_characters_escaped() -> None:
    assert glob_to_like("system:serviceaccount:*") == "system:serviceaccount:%"
    assert glob_to_like("a_b%c?") == "a\\_b\\%c_"


async def test_the_password_from_a_file_and_the_environment_dsn(store: str, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    password = password_of(store)
    assert password
    secret.write_text(password)
    env = {"PATH": "/usr/bin:/bin", "AUDIT_CONSUMER_POSTGRES_DSN": without_password(store)}
    result = query("--postgres-password-file", str(secret), "--verb", "patch", env=env)
    assert result.returncode == 0, result.stderr
    assert "system:node-problem-detector" in result.stdout


async def test_errors_are_one_line_on_stderr_with_the_exit_status(
    postgres_dsn: str, tmp_path: Path
) -> None:
    password = password_of(postgres_dsn)
    assert password
    empty = query("--postgres-dsn", postgres_dsn)
    assert (empty.returncode, empty.stdout) == (2, "")
    assert "no audit store at" in empty.stderr and "--sink postgres" in empty.stderr
    down = query("--postgres-dsn", f"postgresql://u:{password}@127.0.0.1:{unused_port()}/audit")
    assert down.returncode == 1
    assert "cannot connect to PostgreSQL at postgresql://u:***@127.0.0.1" in down.stderr
    bad_time = query("--postgres-dsn", postgres_dsn, "--since", "yesterday-ish")
    assert bad_time.returncode == 2 and "yesterday-ish" in bad_time.stderr
    for result in (empty, down, bad_time):
        assert password not in result.stderr
        assert "Traceback" not in result.stderr
