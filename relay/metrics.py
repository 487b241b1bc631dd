"""Prometheus metrics of the relay, and their exposition (one worker, or all workers' files)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RelayMetrics:
    """The relay's metrics, registered in their own registry (several relays may share a process).

    With ``--workers N`` each worker writes its values to files in ``multiprocess_dir`` and any
    worker's /metrics answers for all of them.
    """

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        registry = self.registry
        self.requests = Counter(
            "relay_requests",
            "Webhook requests answered, by HTTP status code",
            ["code"],
            registry=registry,
        )
        self.events_accepted = Counter(
            "relay_events_accepted", "Audit events acknowledged to the sender", registry=registry
        )
        self.events_dead_lettered = Counter(
            "relay_events_dead_lettered", "Items sent to the dead-letter topic", registry=registry
        )
        self.events_truncated = Counter(
            "relay_events_truncated",
            "Events that lost request/response objects to fit the broker's message limit",
            registry=registry,
        )
        self.events_redacted = Counter(
            "relay_events_redacted", "Events whose secret values were redacted", registry=registry
        )
        self.auth_failures = Counter(
            "relay_auth_failures",
            "Requests refused with 401, by reason",
            ["reason"],
            registry=registry,
        )
        self.connections_refused = Counter(
            "relay_connections_refused",
            "Connections answered 503 and closed because of --max-connections",
            registry=registry,
        )
        self.request_bytes = Counter(
            "relay_request_bytes", "Decoded request body bytes received", registry=registry
        )
        self.events_per_request = Histogram(
            "relay_events_per_request",
            "Events per webhook request",
            buckets=(1, 10, 50, 100, 200, 400, 800, 2000),
            registry=registry,
        )
        self.kafka_ack_seconds = Histogram(
            "relay_kafka_ack_seconds",
            "Time from first send to the last Kafka ack of a request",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.in_flight = Gauge(
            "relay_requests_in_flight",
            "Webhook requests being handled",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self._add_kafka_metrics(registry)
        self._add_spool_metrics(registry)

    def _add_kafka_metrics(self, registry: CollectorRegistry) -> None:
        """Set by ``relay.kafka.publisher`` as its producer comes, acknowledges and goes."""
        self.kafka_connected = Gauge(
            "relay_kafka_connected",
            "1 while a producer is in place that has not failed a batch or missed an ack timeout",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.kafka_last_ack = Gauge(
            "relay_kafka_last_ack_timestamp_seconds",
            "Unix time of the last request Kafka acknowledged whole (0: none since start)",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.producer_restarts = Counter(
            "relay_kafka_producer_restarts",
            "Producers given up (a failed batch or a missed ack timeout) and replaced",
            registry=registry,
        )
        self.events_refused = Counter(
            "relay_events_refused_by_kafka",
            "Records a broker refused for themselves (too large, timestamp out of its window): "
            "dead-lettered with the reason",
            registry=registry,
        )
        self.records_resent = Counter(
            "relay_records_resent",
            "Records sent again on a new producer after the old one failed their batch "
            "(each may reach Kafka twice)",
            registry=registry,
        )

    def _add_spool_metrics(self, registry: CollectorRegistry) -> None:
        """Set by ``relay.spool.delivery``; the in-flight bytes by ``relay.edge.backpressure``."""
        self.kafka_up = Gauge(
            "relay_kafka_up",
            "0 while Kafka fails to acknowledge and requests go to the spool",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.kafka_up.set(1)
        self.events_spooled = Counter(
            "relay_events_spooled", "Records written to the disk spool", registry=registry
        )
        self.spool_replayed = Counter(
            "relay_spool_replayed_events", "Spooled records replayed into Kafka", registry=registry
        )
        self.spool_commits = Counter(
            "relay_spool_commits",
            "Spool writes, each one write and one fsync shared by the appends of the requests "
            "that arrived together (group commit)",
            registry=registry,
        )
        self.spool_corrupt_bytes = Counter(
            "relay_spool_corrupt_bytes",
            "Damaged bytes of spool segments skipped (a frame whose length or checksum is wrong); "
            "the frames around them are replayed",
            registry=registry,
        )
        self.spool_bytes = Gauge(
            "relay_spool_bytes",
            "Bytes held by the disk spool",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.spool_events = Gauge(
            "relay_spool_events",
            "Records waiting in the disk spool",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.spool_oldest_age = Gauge(
            "relay_spool_oldest_age_seconds",
            "Age of the oldest record waiting in the disk spool",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.spool_replay_rate = Gauge(
            "relay_spool_replay_rate",
            "Spooled records replayed per second, over the last 10 s",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.bytes_in_flight = Gauge(
            "relay_request_bytes_in_flight",
            "Bytes held by webhook requests being handled: their bodies and the records built of "
            "them (--max-inflight-bytes)",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.unanswered_bytes = Gauge(
            "relay_kafka_unanswered_bytes",
            "Bytes of records still held for Kafka whose request was already answered (503 or "
            "spooled); --max-inflight-bytes bounds them together with the requests in flight",
            multiprocess_mode="livesum",
            registry=registry,
        )

    def exposition(self) -> bytes:
        """The text format of every metric, over all workers when running several."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
