"""``audit-source``'s answers to bad flags: a message on stderr and exit status 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.processes import run_module


def run_source(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("relay.sources.cli", *args, timeout=30)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the following arguments are required: kind"),
        (("journald",), "invalid choice: 'journald'"),
        (("file", "--path", "/var/log/audit.log"), "--checkpoint-dir is required"),
        (("file", "--checkpoint-dir", "/tmp/cp"), "audit-source file needs --path"),
    ],
)
def test_bad_flags_exit_2_with_a_message(args: tuple[str, ...], message: str) -> None:
    result = run_source(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreadable_checkpoint_stops_the_source_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "file.json").write_text("not a checkpoint")
    log = tmp_path / "audit.log"
    log.touch()
    result = run_source(
        "file",
        "--path",
        str(log),
        "--checkpoint-dir",
        str(tmp_path),
        "--kafka-bootstrap",
        "127.0.0.1:1",
        "--listen",
        "127.0.0.1:0",
    )
    assert result.returncode == 1
    assert "cannot read the checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
