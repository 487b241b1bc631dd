"""The outage log: one line when Kafka stops acknowledging, one a minute, one when it is back."""

from __future__ import annotations

import logging

import pytest

from relay.kafka import outage
from relay.kafka.outage import OutageLog


def test_an_outage_is_one_line_then_one_a_minute_then_one_at_its_end(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(outage.time, "monotonic", lambda: now[0])
    log = OutageLog("kafka:9092")
    with caplog.at_level(logging.INFO, logger="relay.kafka.outage"):
        for _ in range(150):  # a failed attempt every second for 150 s
            log.failed("cannot connect")
            now[0] += 1
        assert log.ongoing
        log.acknowledged()
        log.acknowledged()
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "Kafka at kafka:9092 is not acknowledging: cannot connect",
        "Kafka at kafka:9092 still not acknowledging after 60s (61 failed attempts): "
        "cannot connect",
        "Kafka at kafka:9092 still not acknowledging after 120s (121 failed attempts): "
        "cannot connect",
        "Kafka at kafka:9092 acknowledging again after 150s (150 failed attempts)",
    ]
    assert not log.ongoing
