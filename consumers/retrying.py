"""Trying one step of a consumer again until it succeeds or a stop is requested, and sorting
the failures of a sink's batch: retried with backoff, written one event at a time, or raised.

Built by ``consumers.runner.Runner`` at start; it opens the sink through ``Retrier.retry``, and
``consumers.consume_loop.ConsumeLoop`` sends each batch's dead letters, writes each batch and
flushes after idle polls through it. ``stop_requested_within`` is the wait between tries, also
used by the runner while it waits for the topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from audit_common.errors import AuditRelayError
from consumers.health import Health
from consumers.metrics import ConsumerMetrics
from consumers.offsets import Offsets
from consumers.settings import ConsumerSettings
from consumers.sinks.base import REPEATING, BatchRefused, failure_text

log = logging.getLogger(__name__)


class Retrier:
    """One consumer's retries: ``--retry-backoff`` doubling up to ``--retry-backoff-max``, and
    ``--max-attempts`` for the exceptions its sink (``sink_name``) did not expect. Each failure
    is counted in ``metrics``, told to ``health``, and the lag in ``offsets`` is exported
    between tries; ``stopping`` is the runner's stop request."""

    def __init__(
        self,
        settings: ConsumerSettings,
        metrics: ConsumerMetrics,
        health: Health,
        offsets: Offsets,
        sink_name: str,
        stopping: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._health = health
        self._offsets = offsets
        self._sink_name = sink_name
        self._stopping = stopping

    async def retry(
        self,
        operation: str,
        what: str,
        action: Callable[[], Awaitable[None]],
        one_by_one: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """Run ``action`` until it succeeds (True) or a stop request comes while it fails (False).

        Retriable project errors are retried with exponential backoff. With ``one_by_one`` (the
        batch's events written one at a time), a batch the sink refuses for good
        (``BatchRefused``), an exception that repeats for an event (``REPEATING``) and, after
        ``--max-attempts`` tries, any other exception the sink did not expect switch to it, so
        that no event can stop the group. Other errors (ConfigError) propagate, and the process
        exits without committing what failed.
        """
        delay = self._settings.retry_backoff
        failures = unexpected = 0
        while True:
            try:
                await action()
            except AuditRelayError as exc:
                if isinstance(exc, BatchRefused) and one_by_one is not None:
                    log.warning("%s; writing the batch's events one by one", exc)
                    action, one_by_one = one_by_one, None
                    continue
                if not exc.retriable:
                    raise
                failures += 1
                self._metrics.failures.labels(operation).inc()
                if operation == "open":
                    self._health.starting(f"cannot open the sink: {exc}")
                else:
                    self._health.waiting(f"unable to {what} ({failures} failures): {exc}")
                log.warning(
                    "cannot %s (failure %d, next try in %.1fs): %s", what, failures, delay, exc
                )
            except Exception as exc:
                if one_by_one is None:
                    raise
                unexpected += 1
                self._metrics.unexpected.inc()
                attempts = self._settings.max_attempts
                if isinstance(exc, REPEATING) or unexpected >= attempts:
                    log.error(
                        "the %s sink failed %d time(s) on a batch with %s; writing its events "
                        "one by one to dead-letter those that fail alone",
                        self._sink_name,
                        unexpected,
                        failure_text(exc),
                        exc_info=exc,
                    )
                    action, one_by_one = one_by_one, None
                    continue
                self._health.waiting(f"unable to {what} ({unexpected} unexpected errors): {exc}")
                log.warning(
                    "cannot %s (unexpected error %d of %d, next try in %.1fs): %s",
                    what,
                    unexpected,
                    attempts,
                    delay,
                    failure_text(exc),
                )
            else:
                if failures or unexpected:
                    log.info("could %s after %d failures", what, failures + unexpected)
                return True
            self._offsets.update_lag()
            if await stop_requested_within(self._stopping, delay):
                log.error(
                    "stopping while unable to %s; the batch is not committed, it comes again",
                    what,
                )
                return False
            delay = min(delay * 2, self._settings.retry_backoff_max)


async def stop_requested_within(stopping: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``stopping``; whether it was set. Raises nothing."""
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except TimeoutError:
        return False
    return True
