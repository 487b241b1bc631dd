"""The README's two commands work in a clone with nothing beside it (no ../shared): the first
prints CSV rows of the sample events; the test suite collects whole, and its rules and filter
tests pass, skipping only what is about Falco's recorded traces."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.kafka import REPO
from tests.support.net import unused_port, unused_port_pair

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of the repository's HEAD in a directory with nothing else in it."""
    made = tmp_path_factory.mktemp("bare") / "alone" / "kube-audit-relay"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(made)], check=True, timeout=60)
    assert not (made.parent.parent / "shared").exists()
    return made


@pytest.mark.timeout(420)
def test_run_in_a_bare_clone_prints_csv_rows_of_its_own_sample_events(
    clone: Path, tmp_path: Path
) -> None:
    stdout, stderr = tmp_path / "run.stdout", tmp_path / "run.stderr"
    env = {
        **os.environ,
        "KAFKA_PORT": str(unused_port_pair()),
        "RELAY_PORT": str(unused_port()),
        "KAFKA_CACHE_DIR": os.environ.get("KAFKA_CACHE_DIR", ""),
    }
    if not env["KAFKA_CACHE_DIR"]:
        del env["KAFKA_CACHE_DIR"]  # the jars fetched once, outside any repository
    with stdout.open("wb") as out, stderr.open("wb") as err:
        run = subprocess.Popen(
            ["deploy/local/run"], cwd=clone, stdout=out, stderr=err, env=env, start_new_session=True
        )
    try:
        rows = wait_for_csv_rows(run, stdout, stderr, count=50, timeout=360)
    finally:
        os.killpg(run.pid, signal.SIGINT)  # as Ctrl-C on its terminal
        try:
            run.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=10)
    header, *events = csv.reader(rows)
    assert header[:6] == ["stageTimestamp", "level", "stage", "requestURI", "verb", "username"]
    users = {event[5] for event in events}
    assert len(users) > 3, f"sample events of few users: {users}"
    assert {event[4] for event in events} >= {"get", "list", "create"}
    assert "looked in" not in stderr.read_text()


def wait_for_csv_rows(
    run: subprocess.Popen[bytes], stdout: Path, stderr: Path, *, count: int, timeout: float
) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = stdout.read_text().splitlines()
        if len(rows) > count:
            return rows
        if run.poll() is not None:
            pytest.fail(f"deploy/local/run exited {run.returncode}:\n{stderr.read_text()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"no {count} CSV rows within {timeout}s:\n{stderr.read_text()[-3000:]}")


@pytest.mark.timeout(600)
def test_the_suite_collects_and_the_rules_and_filter_tests_pass_in_a_bare_clone(
    clone: Path,
) -> None:
    setup = subprocess.run(
        ["deploy/local/setup"], cwd=clone, capture_output=True, text=True, timeout=400, check=False
    )
    assert setup.returncode == 0, setup.stderr[-3000:]
    # The outer session's settings are not the clone's.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}

    def pytest_in_clone(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(clone / ".venv" / "bin" / "pytest"), "-p", "no:cacheprovider", *args]
        return subprocess.run(
            command, cwd=clone, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    collected = pytest_in_clone("--collect-only", "-q")
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert re.search(r"^\d+ tests collected", collected.stdout, flags=re.MULTILINE)
    ran = pytest_in_clone("-q", "-rs", "tests/consumers/rules", "tests/consumers/test_filters.py")
    assert ran.returncode == 0, ran.stdout[-5000:] + ran.stderr[-3000:]
    summary = ran.stdout.splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary, summary
    # What is skipped is skipped for the traces' absence, and says where it looked.
    skips = [line for line in ran.stdout.splitlines() if line.startswith("SKIPPED")]
    absent = str(clone.parent / "shared" / "corpus")
    assert skips and all(absent in line for line in skips), skips
