"""Getting a request's records to Kafka, or onto the disk spool when Kafka does not answer.

``Delivery.deliver`` is what the webhook handler calls (``relay.edge.app``'s ``Deliver``). With a
spool it returns once the records are acknowledged by Kafka or fsynced to disk, so the relay's
200 always means "in Kafka or on disk"; without one, Kafka's error goes back as a 503. A
background task replays the spool into Kafka when Kafka answers again.

While the spool holds anything, new requests go to the spool too rather than to Kafka: that
keeps what one worker sends in the order it was received, and spares each request a wait of
``--ack-timeout`` while Kafka is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from audit_common.errors import KafkaUnavailable
from audit_common.resource import AsyncResource
from relay.events.records import OutboundRecord
from relay.metrics import RelayMetrics
from relay.spool.store import Spool

log = logging.getLogger(__name__)

Publish = Callable[[Sequence[OutboundRecord]], Awaitable[None]]

_REPLAY_INTERVAL_S = 0.5
_REPLAY_BACKOFF_MAX_S = 2.0
_STATUS_LOG_INTERVAL_S = 60.0


@dataclass(frozen=True)
class DeliverySettings:
    """Spool and memory bounds, built by ``relay.settings``; no spool when ``spool_dir`` is None."""

    spool_dir: str | None = None
    spool_max_bytes: int = 1 << 30
    max_inflight_bytes: int = 128 << 20


class Delivery(AsyncResource):
    """Publishes to Kafka, falls back to the spool, and replays the spool in the background.

    Owned by ``relay.edge.server``: started after the publisher and stopped before it. ``start`` and
    ``stop`` are idempotent; the class is also an async context manager.
    """

    def __init__(self, settings: DeliverySettings, publish: Publish, metrics: RelayMetrics) -> None:
        self.settings = settings
        self._publish = publish
        self._metrics = metrics
        self.spool = (
            Spool(Path(settings.spool_dir), max_bytes=settings.spool_max_bytes)
            if settings.spool_dir
            else None
        )
        self._replayer: asyncio.Task[None] | None = None
        self._kafka_up = True
        # Probe with one record until a replay succeeds: Kafka may be down since before start.
        self._probe = True
        self._down_since = 0.0
        self._last_status_log = 0.0
        self._replayed_counted = 0
        self._commits_counted = 0
        self._corrupt_bytes_counted = 0
        self.left_on_spool = 0

    async def start(self) -> None:
        """Open the spool and start replaying it. Raises ConfigError when it cannot be used."""
        if self.spool is not None and self._replayer is None:
            await self.spool.start()
            self._update_metrics()
            self._replayer = asyncio.create_task(self._replay_forever(), name="spool-replay")

    async def stop(self) -> None:
        """Stop replaying and close the spool; what it still holds is replayed at next start.

        Sets ``left_on_spool``: the events the spool still holds (logged when any).
        """
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
            self._replayer = None
        if self.spool is not None:
            stats = self.spool.stats()
            self.left_on_spool = stats.events
            if stats.events:
                log.warning(
                    "stopping with %d events (%d bytes) on the spool in %s: a relay started on "
                    "it delivers them",
                    stats.events,
                    stats.bytes,
                    self.spool.root,
                )
            await self.spool.stop()

    async def deliver(self, records: Sequence[OutboundRecord]) -> None:
        """Return once ``records`` are acknowledged by Kafka or durable in the spool.

        Called by the webhook handler for the records of one request. Raises KafkaUnavailable
        when Kafka fails and there is no spool, and Overloaded when the spool is full.
        """
        spool = self.spool
        if spool is None:
            await self._publish(records)
            return
        if spool.empty:
            try:
                await self._publish(records)
                return
            except KafkaUnavailable as exc:
                self._kafka_down(exc)
        await spool.append(records)
        self._metrics.events_spooled.inc(len(records))
        self._update_metrics()

    def _kafka_down(self, exc: KafkaUnavailable) -> None:
        self._probe = True
        if self._kafka_up:
            self._kafka_up = False
            self._down_since = time.monotonic()
            self._metrics.kafka_up.set(0)
            log.warning("Kafka unavailable (%s): spooling requests to disk", exc)

    def _kafka_back(self, replayed: int, started: float) -> None:
        if not self._kafka_up:
            self._kafka_up = True
            self._metrics.kafka_up.set(1)
            log.info(
                "Kafka is back after %.0fs: replayed %d spooled events in %.1fs",
                time.monotonic() - self._down_since,
                replayed,
                time.monotonic() - started,
            )

    async def _replay_forever(self) -> None:
        assert self.spool is not None
        delay = _REPLAY_INTERVAL_S
        while True:
            await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                replayed = await self.spool.replay(self._publish, probe=self._probe)
            except KafkaUnavailable as exc:
                self._kafka_down(exc)
                delay = min(delay * 2, _REPLAY_BACKOFF_MAX_S)
            except Exception:
                # Whatever went wrong, the spool keeps the records; keep trying, loudly.
                log.exception("spool replay failed; retrying")
                delay = _REPLAY_BACKOFF_MAX_S
            else:
                delay = _REPLAY_INTERVAL_S
                self._probe = False
                self._kafka_back(replayed, started)
            self._update_metrics()
            self._log_status()

    def _update_metrics(self) -> None:
        assert self.spool is not None
        stats = self.spool.stats()
        metrics = self._metrics
        metrics.spool_bytes.set(stats.bytes)
        metrics.spool_events.set(stats.events)
        metrics.spool_oldest_age.set(stats.oldest_age_s)
        metrics.spool_replay_rate.set(stats.replay_rate)
        metrics.spool_replayed.inc(stats.replayed_events - self._replayed_counted)
        self._replayed_counted = stats.replayed_events
        metrics.spool_commits.inc(stats.commits - self._commits_counted)
        self._commits_counted = stats.commits
        metrics.spool_corrupt_bytes.inc(stats.corrupt_bytes - self._corrupt_bytes_counted)
        self._corrupt_bytes_counted = stats.corrupt_bytes

    def _log_status(self) -> None:
        assert self.spool is not None
        now = time.monotonic()
        if self.spool.empty or now - self._last_status_log < _STATUS_LOG_INTERVAL_S:
            return
        self._last_status_log = now
        stats = self.spool.stats()
        log.warning(
            "Kafka %s; spool holds %d events (%d bytes), oldest %.0fs, replaying %.0f events/s",
            "up" if self._kafka_up else f"down for {now - self._down_since:.0f}s",
            stats.events,
            stats.bytes,
            stats.oldest_age_s,
            stats.replay_rate,
        )
