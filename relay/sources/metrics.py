"""Prometheus metrics of an audit source, beside the relay's (``relay.metrics``) in its registry."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge


class SourceMetrics:
    """Set by ``relay.sources.runner``; exposed on the source's /metrics with the relay's
    publisher, spool and event metrics (``relay_*``), which the source's records go through."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events_read = Counter(
            "audit_source_events_read",
            "Items a source read (events, and lines that are none: those are dead-lettered)",
            registry=registry,
        )
        self.entries_skipped = Counter(
            "audit_source_entries_skipped",
            "Entries a source read that are no audit events by design and delivers nowhere "
            "(eventhubs: diagnostic records of other categories; pubsub: a log sink's entries "
            "of other services)",
            registry=registry,
        )
        self.events_repeated = Counter(
            "audit_source_events_repeated",
            "Items read again after a restart that may already be in Kafka (delivered, or being "
            "delivered, after the last checkpoint; or delivered and not yet recorded by the "
            "service: eventhubs' uncommitted offsets)",
            registry=registry,
        )
        self.errors = Counter(
            "audit_source_errors",
            "Failures a source retried, by kind (deliver: Kafka and the spool refused; others "
            "name what the source reads from)",
            ["kind"],
            registry=registry,
        )
        self.lag = Gauge(
            "audit_source_lag_seconds",
            "Seconds the last delivered event is behind the newest entry of the source (0 when "
            "caught up)",
            registry=registry,
        )
        self.checkpoint_time = Gauge(
            "audit_source_checkpoint_timestamp_seconds",
            "Unix time the checkpoint was last recorded (0: not since start)",
            registry=registry,
        )
        self.checkpoint_age = Gauge(
            "audit_source_checkpoint_age_seconds",
            "Seconds since the checkpoint was last recorded, or since start",
            registry=registry,
        )
        self._checkpointed_at = time.time()
        self.checkpoint_age.set_function(lambda: time.time() - self._checkpointed_at)

    def checkpointed(self) -> None:
        """Called by the runner each time it recorded the checkpoint."""
        self._checkpointed_at = time.time()
        self.checkpoint_time.set(self._checkpointed_at)
