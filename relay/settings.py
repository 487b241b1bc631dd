"""The relay's settings: one frozen dataclass, built in one place from flags and environment."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from audit_common.errors import ConfigError
from audit_common.kafka_connection import add_kafka_arguments, kafka_connection_from_args
from audit_common.options import EnvArgumentParser, host_port, positive_float, positive_int
from relay import exit_status
from relay.edge.auth import AuthSettings, add_auth_arguments, auth_settings_from_args
from relay.edge.limits import ClientLimits, add_limit_arguments, limits_from_args
from relay.edge.tls import TLSSettings, add_tls_arguments, tls_settings_from_args
from relay.events.redact import (
    RedactionSettings,
    add_redaction_arguments,
    redaction_settings_from_args,
)
from relay.events.split import DEFAULT_MAX_ITEMS
from relay.kafka.publisher import PublisherSettings
from relay.spool.delivery import DeliverySettings

ENV_PREFIX = "AUDIT_RELAY"


@dataclass(frozen=True)
class RelaySettings:
    """Everything one relay process (or each of its workers) runs with."""

    publisher: PublisherSettings
    listen_host: str = "0.0.0.0"
    listen_port: int = 8080
    path: str = "/api/audits"
    cluster: str = "default"
    workers: int = 1
    insecure: bool = False
    max_body_bytes: int = 64 << 20
    max_items_per_request: int = DEFAULT_MAX_ITEMS
    shutdown_grace: float = 20.0
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    redaction: RedactionSettings = field(default_factory=RedactionSettings)
    limits: ClientLimits = field(default_factory=ClientLimits)
    # Set by __main__ when several workers share metrics files.
    metrics_dir: str | None = field(default=None)


def build_parser(environ: Mapping[str, str]) -> EnvArgumentParser:
    parser = EnvArgumentParser(
        prog="audit-relay",
        description=(
            "Receive kube-apiserver audit webhook batches and publish one Kafka message per "
            "event. Answers 200 only once Kafka acknowledged every event of the request; "
            "503 with Retry-After when it cannot, so the apiserver retries."
        ),
        epilog=exit_status.HELP,
        env_prefix=ENV_PREFIX,
        environ=environ,
    )
    add = parser.add_option
    add("--listen", type=host_port, default="0.0.0.0:8080", help="HOST:PORT to serve on")
    add("--path", default="/api/audits", help="URL path of the webhook (any query is accepted)")
    add(
        "--workers",
        type=positive_int,
        default=1,
        help="worker processes sharing the port (SO_REUSEPORT); one per core",
    )
    add(
        "--max-body-bytes",
        type=positive_int,
        default=64 << 20,
        help="largest decoded request body; larger ones get 413",
    )
    add(
        "--max-items-per-request",
        type=positive_int,
        default=DEFAULT_MAX_ITEMS,
        help="most items one request's EventList may hold (the apiserver sends up to 400); "
        "more get 413, found before the items beyond it are read",
    )
    add(
        "--shutdown-grace",
        type=positive_float,
        default=20.0,
        help="seconds requests in flight get to finish on SIGTERM; the producer then gets "
        "--ack-timeout + 5 s to deliver and close, so a stop takes at most their sum",
    )
    add(
        "--insecure",
        action="store_true",
        help="allow serving plain HTTP, or without client authentication (logged as a warning); "
        "otherwise --tls-cert/--tls-key and --token-file and/or --client-ca are required",
    )
    add_publishing_arguments(parser)
    add_tls_arguments(parser)
    add_auth_arguments(parser)
    add_limit_arguments(parser)
    return parser


def add_publishing_arguments(parser: EnvArgumentParser) -> None:
    """The flags of the way from built records to Kafka (or the spool) and of redaction: shared
    by ``audit-relay`` and ``audit-source`` (``relay.sources.cli``), so that both take the same
    names and ``AUDIT_RELAY_*`` variables."""
    add = parser.add_option
    add("--topic", default="k8s-audit", help="Kafka topic for audit events")
    add(
        "--dead-letter-topic",
        default="k8s-audit.dead-letter",
        help="Kafka topic for bodies and items that are not audit events",
    )
    add(
        "--partitions",
        type=positive_int,
        default=12,
        help="partitions of the topics when the relay creates them",
    )
    add(
        "--replication-factor",
        type=positive_int,
        default=1,
        help="replication factor of the topics when the relay creates them (3 in production); "
        "they get min.insync.replicas = min(2, this)",
    )
    add("--cluster", default="default", help="cluster name put in each event's 'cluster' header")
    add(
        "--ack-timeout",
        type=positive_float,
        default=10.0,
        help="seconds to wait for Kafka's acks before answering 503 (the apiserver waits 30)",
    )
    add(
        "--kafka-stall-after",
        type=positive_float,
        default=1.0,
        help="seconds of waiting for acks before asking, over a connection of the relay's own, "
        "whether any broker answers",
    )
    add(
        "--kafka-probe-timeout",
        type=positive_float,
        default=1.0,
        help="seconds a broker gets to answer one such probe",
    )
    add(
        "--kafka-probe-misses",
        type=positive_int,
        default=3,
        help="probes in a row left unanswered before the producer is given up as unreachable",
    )
    add(
        "--max-message-bytes",
        type=positive_int,
        default=1048576,
        help="the broker's message limit; larger events lose request/response objects",
    )
    add(
        "--compression",
        choices=("lz4", "zstd", "gzip", "none"),
        default="zstd",
        help="Kafka compression codec (zstd: aiokafka's lz4 is the slow high-compression mode)",
    )
    add(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level",
    )
    add(
        "--spool-dir",
        help=(
            "directory of the disk spool: when Kafka fails, events are fsynced here and "
            "acknowledged, then replayed (one subdirectory per worker); unset: answer 503"
        ),
    )
    add(
        "--spool-max-bytes",
        type=positive_int,
        default=1 << 30,
        help="bytes each worker's spool may hold; beyond it, 503 with Retry-After",
    )
    add(
        "--max-inflight-bytes",
        type=positive_int,
        default=128 << 20,
        help="bytes a worker holds at once: requests in flight, and records still held for "
        "Kafka after their request was answered; beyond it, 503 with Retry-After",
    )
    add_redaction_arguments(parser)
    add_kafka_arguments(parser)


def publisher_settings_from_args(args: argparse.Namespace) -> PublisherSettings:
    """The publisher's settings from ``add_publishing_arguments``' flags."""
    return PublisherSettings(
        connection=kafka_connection_from_args(args),
        topic=args.topic,
        dead_letter_topic=args.dead_letter_topic,
        partitions=args.partitions,
        replication_factor=args.replication_factor,
        compression=args.compression,
        ack_timeout=args.ack_timeout,
        max_message_bytes=args.max_message_bytes,
        stall_after=args.kafka_stall_after,
        probe_timeout=args.kafka_probe_timeout,
        probe_misses=args.kafka_probe_misses,
    )


def delivery_settings_from_args(args: argparse.Namespace) -> DeliverySettings:
    """The spool and memory bounds from ``add_publishing_arguments``' flags."""
    return DeliverySettings(
        spool_dir=args.spool_dir or None,
        spool_max_bytes=args.spool_max_bytes,
        max_inflight_bytes=args.max_inflight_bytes,
    )


def build_settings(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[RelaySettings, str]:
    """Parse flags (falling back to ``AUDIT_RELAY_*`` variables); return settings and log level.

    Exits with status 2 and a usage message on a malformed flag; raises ConfigError for
    combinations that are wrong or files that cannot be read.
    """
    args: argparse.Namespace = build_parser(environ).parse_args(argv)
    if not args.path.startswith("/"):
        raise ConfigError(f"--path must start with '/', got {args.path!r}")
    tls = tls_settings_from_args(args)
    auth = auth_settings_from_args(args, tls=tls.enabled, client_ca=bool(tls.client_ca_file))
    publisher = publisher_settings_from_args(args)
    host, port = args.listen
    settings = RelaySettings(
        publisher=publisher,
        listen_host=host,
        listen_port=port,
        path=args.path.rstrip("/") or "/",
        cluster=args.cluster,
        workers=args.workers,
        insecure=args.insecure,
        max_body_bytes=args.max_body_bytes,
        max_items_per_request=args.max_items_per_request,
        shutdown_grace=args.shutdown_grace,
        delivery=delivery_settings_from_args(args),
        tls=tls,
        auth=auth,
        redaction=redaction_settings_from_args(args),
        limits=limits_from_args(args),
    )
    return settings, args.log_level
