"""Prometheus metrics of a consumer, and the small HTTP server for /metrics and its probes."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from audit_common.errors import ConfigError
from audit_common.resource import AsyncResource
from consumers.health import Health

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ConsumerMetrics:
    """A consumer's metrics, in their own registry (tests run several consumers in a process)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.consumed = Counter(
            "audit_consumer_events_consumed", "Kafka messages consumed", registry=registry
        )
        self.written = Counter(
            "audit_consumer_events_written",
            "Events written and flushed by the sink",
            registry=registry,
        )
        self.filtered = Counter(
            "audit_consumer_events_filtered",
            "Events dropped by --include/--exclude",
            registry=registry,
        )
        self.deduplicated = Counter(
            "audit_consumer_events_deduplicated",
            "Repeats dropped by --dedupe-window",
            registry=registry,
        )
        self.dead_lettered = Counter(
            "audit_consumer_events_dead_lettered",
            "Messages sent to the dead-letter topic: undecodable, or refused by the sink",
            registry=registry,
        )
        self.refused = Counter(
            "audit_consumer_events_refused",
            "Events the sink could not encode or its destination refused for good "
            "(dead-lettered with the reason)",
            registry=registry,
        )
        self.failed = Counter(
            "audit_consumer_events_failed",
            "Events dead-lettered because writing them alone raised an error the sink did not "
            "expect (the reason header holds its text)",
            registry=registry,
        )
        self.failures = Counter(
            "audit_consumer_failures",
            "Temporary failures, each retried: open (the sink), sink (write), dead-letter (send)",
            ["operation"],
            registry=registry,
        )
        self.unexpected = Counter(
            "audit_consumer_unexpected_errors",
            "Attempts at a batch that failed with an error the sink did not expect; after "
            "--max-attempts its events are written one by one",
            registry=registry,
        )
        self.lag = Gauge(
            "audit_consumer_lag",
            "Messages between the last committed offset and the partition's end",
            ["topic", "partition"],
            registry=registry,
        )
        self.write_seconds = Histogram(
            "audit_consumer_sink_write_seconds",
            "Time to write and flush one batch to the sink",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self._add_cluster_metrics(registry)
        self._add_group_lag_metrics(registry)

    def _add_cluster_metrics(self, registry: CollectorRegistry) -> None:
        """Set by ``consumers.cluster_stats``; ``cluster`` is the relay's header, at most
        ``MAX_CLUSTERS`` values (``unknown`` when absent, ``other`` past the cap)."""
        self.cluster_events = Counter(
            "audit_consumer_events",
            "Events decoded, per cluster, before filters and duplicate suppression",
            ["cluster"],
            registry=registry,
        )
        self.newest_event = Gauge(
            "audit_consumer_newest_event_timestamp_seconds",
            "Unix time of the newest stageTimestamp consumed, per cluster",
            ["cluster"],
            registry=registry,
        )
        self.event_latency = Histogram(
            "audit_consumer_event_latency_seconds",
            "From an event's stageTimestamp to its sink's flush returning, per event written",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=registry,
        )

    def _add_group_lag_metrics(self, registry: CollectorRegistry) -> None:
        """Set by ``consumers.group_lag``, for every group with offsets on the topic, whether
        it has a live member or not; several replicas report the same values."""
        self.group_lag = Gauge(
            "audit_consumer_group_lag",
            "Messages between a group's committed offset and the partition's end",
            ["group", "topic", "partition"],
            registry=registry,
        )
        self.group_committed = Gauge(
            "audit_consumer_group_committed_offset",
            "A group's committed offset",
            ["group", "topic", "partition"],
            registry=registry,
        )
        self.group_lag_updated = Gauge(
            "audit_consumer_group_lag_updated_timestamp_seconds",
            "Unix time the group lag was last read from Kafka (0: never since start)",
            registry=registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer(AsyncResource):
    """Serves ``GET /metrics``, ``/healthz`` (liveness) and ``/readyz`` on ``--metrics-listen``.

    Started and stopped by ``consumers.__main__`` around the runner; ``start``/``stop`` are
    idempotent. ``start`` raises ConfigError when the address cannot be bound.
    """

    def __init__(self, metrics: ConsumerMetrics, health: Health, host: str, port: int) -> None:
        self.metrics = metrics
        self.health = health
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self, request: web.Request) -> web.Response:
        live, answer = self.health.liveness()
        return web.json_response(answer, status=200 if live else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, answer = self.health.readiness()
        return web.json_response(answer, status=200 if ready else 503)

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"--metrics-listen {self.host}:{self.port}: {exc}") from exc
        self._runner = runner
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
