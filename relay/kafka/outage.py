"""Log lines of a Kafka outage: one when it starts, one a minute while it lasts, one at its end."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

REMIND_INTERVAL_S = 60.0


class OutageLog:
    """Owned by ``relay.kafka.publisher.KafkaPublisher``; told of every failure and every ack.

    A failure starts an outage or, at most once a minute, reminds that it lasts; the first
    acknowledgement after it ends it. Nothing is logged per request or per retry.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.started: float | None = None
        self.failures = 0
        self._last_line = 0.0

    @property
    def ongoing(self) -> bool:
        return self.started is not None

    def failed(self, reason: object) -> None:
        """Called for every failed connect attempt, refused batch or missing acknowledgement."""
        now = time.monotonic()
        self.failures += 1
        if self.started is None:
            self.started = self._last_line = now
            log.warning("Kafka at %s is not acknowledging: %s", self.target, reason)
        elif now - self._last_line >= REMIND_INTERVAL_S:
            self._last_line = now
            log.warning(
                "Kafka at %s still not acknowledging after %.0fs (%d failed attempts): %s",
                self.target,
                now - self.started,
                self.failures,
                reason,
            )

    def acknowledged(self) -> None:
        """Called for every acknowledged publish; ends an ongoing outage."""
        if self.started is not None:
            log.info(
                "Kafka at %s acknowledging again after %.0fs (%d failed attempts)",
                self.target,
                time.monotonic() - self.started,
                self.failures,
            )
            self.started = None
            self.failures = 0
