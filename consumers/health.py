"""A consumer's liveness and readiness: a progress clock the runner ticks, read over HTTP.

Liveness (``/healthz``) fails only when work is waiting (records fetched and not yet written,
committed lag on an assigned partition, a sink write or dead-letter send being retried) and
nothing progressed for ``--stall-timeout`` seconds; progress is a batch committed, or a poll
that came back with nothing waiting. An idle consumer stays live, and so does one still
starting (its sink cannot open yet, Kafka does not answer yet): a restart would not help
those, readiness reports them. Kafka lost mid-stream with lag left is a stall like any other.

Readiness (``/readyz``) is 200 once the sink is open and the consumer has joined its group
(with partitions or none, as a spare replica has); 503 before, while the group-lag exporter
cannot reach Kafka, and from the stop request on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Health:
    """Written by ``consumers.runner.Runner`` and the parts it runs (``consumers.consume_loop``,
    ``consumers.retrying``, ``consumers.offsets``), and by ``consumers.group_lag`` for Kafka's
    reachability; read by ``consumers.metrics.MetricsServer``; all on one event loop."""

    def __init__(self, stall_timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_timeout = stall_timeout
        self._clock = clock
        self._last_progress = clock()
        self._waiting: str | None = None
        self._not_ready: str | None = "starting"
        self._kafka_error: str | None = None

    def starting(self, step: str) -> None:
        """Not ready: the runner is at ``step`` of its start (opening the sink, joining...)."""
        self._not_ready = step

    def joined(self) -> None:
        """Ready: the group gave this member its partitions (possibly none). Progress too: a
        sink that took long to open must not make the first batch look stalled."""
        self._not_ready = None
        self.progressed()

    def stopping(self) -> None:
        self._not_ready = "stopping"

    def kafka_reachable(self, error: str | None) -> None:
        """What the last round trip to Kafka found: None when it answered, else why not."""
        self._kafka_error = error

    def progressed(self) -> None:
        """A batch was committed: the clock starts again, whatever is still waiting."""
        self._last_progress = self._clock()

    def idle(self) -> None:
        """A poll came back with nothing fetched and nothing left to commit."""
        self._waiting = None
        self.progressed()

    def waiting(self, what: str) -> None:
        """Work is waiting on this consumer; ``what`` says which, for the liveness answer."""
        self._waiting = what

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """(live, the JSON answer): not live when work waited ``stall_timeout`` in vain."""
        stalled = self._clock() - self._last_progress
        if self._waiting is None or stalled <= self.stall_timeout:
            return True, {"status": "ok"}
        reason = f"no progress for {stalled:.0f} s (--stall-timeout {self.stall_timeout:g})"
        return False, {"status": "stalled", "reason": f"{reason} while {self._waiting}"}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        reason = self._not_ready
        if reason is None and self._kafka_error is not None:
            reason = f"Kafka cannot be reached: {self._kafka_error}"
        if reason is None:
            return True, {"status": "ready"}
        return False, {"status": "not ready", "reason": reason}
