from __future__ import annotations

from pathlib import Path

import pytest

from audit_common.errors import ConfigError
from consumers.settings import build_settings
from consumers.sinks.csv_log import CsvLogSink
from consumers.sinks.jsonl import JsonLinesSink


def test_defaults_follow_the_sink() -> None:
    settings, sink, level = build_settings(["--sink", "jsonl"], {})
    assert isinstance(sink, JsonLinesSink)
    assert settings.group == "audit-jsonl"
    assert settings.topic == "k8s-audit"
    assert settings.dead_letter_topic == "k8s-audit.dead-letter"
    assert settings.dedupe_window == 10000
    assert level == "INFO"


def test_every_flag_has_an_environment_variable_and_flags_win(tmp_path: Path) -> None:
    environ = {
        "AUDIT_CONSUMER_SINK": "csv",
        "AUDIT_CONSUMER_GROUP": "from-env",
        "AUDIT_CONSUMER_KAFKA_BOOTSTRAP": "kafka:9093",
        "AUDIT_CONSUMER_EXCLUDE": "verb=get|list|watch,user=system:*;namespace=kube-system",
        "AUDIT_CONSUMER_CSV_COLUMNS": "verb,auditID",
        "AUDIT_CONSUMER_CSV_HEADER": "yes",
        "AUDIT_CONSUMER_METRICS_LISTEN": "127.0.0.1:9100",
        "AUDIT_CONSUMER_OUTPUT": str(tmp_path / "out.csv"),
    }
    settings, sink, _ = build_settings(["--group", "from-flag"], environ)
    assert isinstance(sink, CsvLogSink)
    assert settings.group == "from-flag"
    assert settings.kafka.bootstrap == "kafka:9093"
    assert [rule.text for rule in settings.event_filter.exclude] == [
        "verb=get|list|watch,user=system:*",
        "namespace=kube-system",
    ]
    assert sink.settings.columns == ("verb", "auditID")
    assert sink.settings.header is True
    assert sink.settings.output.path == tmp_path / "out.csv"
    assert settings.metrics_listen == ("127.0.0.1", 9100)


def test_the_sasl_password_is_read_from_its_file_and_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret-value\n")
    flags = ["--sink", "csv", "--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-username", "u"]
    settings, _, _ = build_settings([*flags, "--kafka-sasl-password-file", str(secret)], {})
    assert settings.kafka.sasl_password == "s3cret-value"
    assert "s3cret-value" not in repr(settings)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sink", "csv", "--dedupe-window", "-1"], "--dedupe-window"),
        (["--sink", "csv", "--retry-backoff", "5", "--retry-backoff-max", "1"], "backoff-max"),
        (["--sink", "csv", "--kafka-sasl-mechanism", "PLAIN"], "--kafka-sasl-username"),
    ],
)
def test_wrong_combinations_are_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_settings(argv, {})
