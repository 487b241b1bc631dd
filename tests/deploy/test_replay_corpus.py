"""``deploy/local/replay-corpus --cluster NAME`` against a real relay: with the relay's token
file (--tokens) the events carry that cluster; without, it says that they carry the relay's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.kafka import REPO, read_topic
from tests.support.relay import StartRelay

pytestmark = pytest.mark.integration
TOKENS = "prod-eu-token-0123456789,prod-eu\nstaging-token-0123456789,staging\n"


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "deploy" / "local" / "replay-corpus"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_cluster_with_tokens_stamps_the_events(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS)
    relay = await start_relay("--token-file", str(tokens), "--cluster", "relay-default")
    flags = ("--url", relay.url, "--count", "15", "--tokens", str(tokens))
    result = replay(*flags, "--cluster", "staging", "--cluster", "prod-eu")
    assert result.returncode == 0, result.stderr
    assert "note:" not in result.stderr
    records = await read_topic(relay.bootstrap, relay.topic, 30)
    clusters = [dict(record.headers)["cluster"].decode() for record in records]
    assert sorted(clusters) == ["prod-eu"] * 15 + ["staging"] * 15
    missing = replay(*flags, "--cluster", "prod-us")
    assert missing.returncode == 2 and "no token for cluster prod-us" in missing.stderr


async def test_cluster_without_tokens_says_the_relay_stamps_the_events(
    start_relay: StartRelay,
) -> None:
    relay = await start_relay("--cluster", "relay-default")
    result = replay("--url", relay.url, "--count", "5", "--cluster", "staging")
    assert result.returncode == 0, result.stderr
    assert "the events carry the relay's cluster, not staging" in result.stderr
    records = await read_topic(relay.bootstrap, relay.topic, 5)
    assert {dict(record.headers)["cluster"] for record in records} == {b"relay-default"}
