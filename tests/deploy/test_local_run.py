"""The README's first command works in a clone with nothing beside it (no ../shared)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.kafka import REPO
from tests.support.net import unused_port, unused_port_pair

pytestmark = pytest.mark.integration


@pytest.mark.timeout(420)
def test_run_in_a_bare_clone_prints_csv_rows_of_its_own_sample_events(tmp_path: Path) -> None:
    clone = tmp_path / "alone" / "kube-audit-relay"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=60)
    assert not (clone.parent.parent / "shared").exists()
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
