"""Flags, environment variables and their errors, through the real entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit_common.errors import ConfigError
from relay.settings import build_settings


def test_insecure_is_required_until_tls_is_configured() -> None:
    with pytest.raises(ConfigError, match="--insecure"):
        build_settings([], {})


def test_environment_fills_flags_and_flags_win() -> None:
    settings, level = build_settings(
        ["--insecure", "--topic", "from-flag"],
        {
            "AUDIT_RELAY_TOPIC": "from-env",
            "AUDIT_RELAY_CLUSTER": "c9",
            "AUDIT_RELAY_WORKERS": "3",
            "AUDIT_RELAY_LOG_LEVEL": "DEBUG",
        },
    )
    assert settings.publisher.topic == "from-flag"
    assert settings.cluster == "c9"
    assert settings.workers == 3
    assert level == "DEBUG"


def test_repeatable_flags_on_the_command_line_replace_the_environment() -> None:
    environ = {"AUDIT_RELAY_REDACT_RESOURCE": "configmaps;leases"}
    from_env, _ = build_settings(["--insecure"], environ)
    assert from_env.redaction.resources >= {"configmaps", "leases"}
    from_flag, _ = build_settings(["--insecure", "--redact-resource", "events"], environ)
    assert "events" in from_flag.redaction.resources
    assert not from_flag.redaction.resources & {"configmaps", "leases"}


def test_listen_parses_host_and_port() -> None:
    settings, _ = build_settings(["--insecure", "--listen", "127.0.0.1:9000"], {})
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 9000)


def run_relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args], capture_output=True, text=True, timeout=30
    )


def test_help_lists_every_flag_with_its_environment_variable() -> None:
    result = run_relay("--help")
    assert result.returncode == 0
    for flag in (
        "--listen",
        "--path",
        "--kafka-bootstrap",
        "--topic",
        "--dead-letter-topic",
        "--cluster",
        "--workers",
        "--insecure",
    ):
        assert flag in result.stdout
    assert "AUDIT_RELAY_KAFKA_BOOTSTRAP" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--insecure", "--workers", "0"], "must be at least 1"),
        (["--insecure", "--listen", "nowhere"], "HOST:PORT"),
        (["--insecure", "--path", "api"], "--path must start with '/'"),
        ([], "--insecure"),
        (["--insecure", "--kafka-sasl-mechanism", "PLAIN"], "--kafka-sasl-username"),
    ],
)
def test_mistakes_exit_non_zero_with_a_message(args: list[str], message: str) -> None:
    result = run_relay(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUDIT_RELAY_COMPRESSION", "snappy"),
        ("AUDIT_RELAY_LOG_LEVEL", "verbose"),
        ("AUDIT_RELAY_KAFKA_SASL_MECHANISM", "GSSAPI"),
    ],
)
def test_an_environment_value_outside_the_choices_exits_2_naming_it(
    variable: str, value: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "relay", "--insecure"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, variable: value},
    )
    assert result.returncode == 2
    assert f"{variable}={value!r}: expected one of" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_shows_no_none_defaults() -> None:
    assert "(default: None)" not in run_relay("--help").stdout


def test_stall_probe_flags_their_environment_and_defaults() -> None:
    settings, _ = build_settings(
        ["--insecure", "--kafka-probe-misses", "5"],
        {"AUDIT_RELAY_KAFKA_STALL_AFTER": "2.5", "AUDIT_RELAY_KAFKA_PROBE_TIMEOUT": "0.5"},
    )
    publisher = settings.publisher
    assert (publisher.stall_after, publisher.probe_timeout, publisher.probe_misses) == (2.5, 0.5, 5)
    defaults = build_settings(["--insecure"], {})[0].publisher
    assert (defaults.stall_after, defaults.probe_timeout, defaults.probe_misses) == (1.0, 1.0, 3)


def test_spool_flags_and_their_environment() -> None:
    settings, _ = build_settings(
        ["--insecure", "--spool-dir", "/var/spool/relay"],
        {"AUDIT_RELAY_SPOOL_MAX_BYTES": "1000", "AUDIT_RELAY_MAX_INFLIGHT_BYTES": "2000"},
    )
    assert settings.delivery.spool_dir == "/var/spool/relay"
    assert settings.delivery.spool_max_bytes == 1000
    assert settings.delivery.max_inflight_bytes == 2000
    assert build_settings(["--insecure"], {})[0].delivery.spool_dir is None


def test_unusable_spool_dir_exits_non_zero_with_a_message(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = run_relay(
        "--insecure", "--listen", "127.0.0.1:0", "--kafka-bootstrap", "127.0.0.1:1",
        "--spool-dir", str(not_a_dir),
    )  # fmt: skip
    assert result.returncode == 2
    assert "--spool-dir" in result.stderr
    assert "Traceback" not in result.stderr
