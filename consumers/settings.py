"""audit-consumer's settings: frozen dataclasses built in one place from flags and environment.

Every flag ``--some-flag`` can also be given as ``AUDIT_CONSUMER_SOME_FLAG``. Each sink declares
its own flags (``Sink.add_arguments``) and builds itself from them (``Sink.from_args``).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from audit_common.errors import ConfigError
from audit_common.kafka_connection import (
    KafkaConnection,
    add_kafka_arguments,
    kafka_connection_from_args,
)
from audit_common.options import EnvArgumentParser, host_port, positive_float, positive_int
from consumers.filters import EventFilter
from consumers.sinks import SINKS, Sink
from consumers.sinks.output import add_output_arguments

ENV_PREFIX = "AUDIT_CONSUMER"
USAGE = """audit-consumer --sink NAME [flags]
       audit-consumer query [flags]                   (audit-consumer query --help)
       audit-consumer rules test [flags] EVENTS_FILE  (audit-consumer rules test --help)"""
SUBCOMMANDS = """subcommands:
  query        who did what to which object, when: read the store of --sink postgres
  rules test   evaluate detection rules (Falco's language) on files of audit events
"""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerSettings:
    """What the runner consumes, how it retries, and what it drops before the sink."""

    sink: str
    kafka: KafkaConnection = field(default_factory=KafkaConnection)
    topic: str = "k8s-audit"
    dead_letter_topic: str = "k8s-audit.dead-letter"
    group: str = "audit-csv"
    client_id: str = "audit-consumer"
    start_from: str = "earliest"
    max_batch: int = 500
    session_timeout: float = 10.0
    shutdown_grace: float = 20.0
    retry_backoff: float = 0.5
    retry_backoff_max: float = 30.0
    max_attempts: int = 5
    dedupe_window: int = 10000
    event_filter: EventFilter = field(default_factory=EventFilter)
    metrics_listen: tuple[str, int] | None = None
    stall_timeout: float = 300.0
    group_lag_interval: float = 30.0


def build_parser(environ: Mapping[str, str]) -> EnvArgumentParser:
    parser = EnvArgumentParser(
        prog="audit-consumer",
        description=(
            "Read the relay's audit events from Kafka in a consumer group and write them to a "
            "sink. Offsets are committed only after the sink has durably written a batch "
            "(at least once); run one replica per partition at most."
        ),
        usage=USAGE,
        epilog=SUBCOMMANDS,
        env_prefix=ENV_PREFIX,
        environ=environ,
    )
    add = parser.add_option
    add("--sink", choices=sorted(SINKS), help="where events go (required)")
    add("--group", help="Kafka consumer group (default: audit-<sink>); one group per sink")
    add("--topic", default="k8s-audit", help="Kafka topic the relay publishes events to")
    add(
        "--dead-letter-topic",
        default="k8s-audit.dead-letter",
        help="Kafka topic for messages that cannot be decoded and events the sink cannot write",
    )
    add("--client-id", default="audit-consumer", help="Kafka client id, shown in broker logs")
    add(
        "--start-from",
        choices=("earliest", "latest"),
        default="earliest",
        help="where a new group starts reading (a group with committed offsets resumes)",
    )
    add("--max-batch", type=positive_int, default=500, help="most events per sink write")
    add(
        "--session-timeout",
        type=positive_float,
        default=10.0,
        help="seconds before the group gives a silent replica's partitions to the others",
    )
    add(
        "--shutdown-grace",
        type=positive_float,
        default=20.0,
        help="seconds after the last batch to commit and leave the group when stopping; "
        "past them (Kafka unreachable) the consumer exits anyway, 1 if offsets were left "
        "uncommitted (those events are consumed again)",
    )
    add(
        "--retry-backoff",
        type=positive_float,
        default=0.5,
        help="seconds before the first retry of a failing sink; doubles on each failure",
    )
    add(
        "--retry-backoff-max",
        type=positive_float,
        default=30.0,
        help="longest wait between retries of a failing sink",
    )
    add(
        "--max-attempts",
        type=positive_int,
        default=5,
        metavar="N",
        help="tries of a batch that fails with an error the sink did not expect before its "
        "events are written one by one and those failing alone are dead-lettered",
    )
    add(
        "--include",
        action="append",
        metavar="RULE",
        help="keep only events matching a rule FIELD=GLOB[|GLOB][,FIELD=GLOB] (see README)",
    )
    add(
        "--exclude",
        action="append",
        metavar="RULE",
        help="drop events matching a rule, e.g. 'verb=get|list|watch,user=system:*'",
    )
    add(
        "--dedupe-window",
        type=int,
        default=10000,
        metavar="N",
        help="drop a repeat (same cluster, same value byte for byte) among the last N; 0: off",
    )
    add(
        "--metrics-listen",
        type=host_port,
        help="HOST:PORT serving /metrics, /healthz (liveness) and /readyz",
    )
    add(
        "--stall-timeout",
        type=positive_float,
        default=300.0,
        help="seconds without progress (a batch committed, or an idle poll) while work waits "
        "before /healthz answers 503",
    )
    add(
        "--group-lag-interval",
        type=positive_float,
        default=30.0,
        help="seconds between reads of every consumer group's lag on the topic from Kafka "
        "(audit_consumer_group_lag, with --metrics-listen)",
    )
    add(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level (logs go to stderr)",
    )
    add_kafka_arguments(parser)
    add_output_arguments(parser)
    for sink in SINKS.values():
        sink.add_arguments(parser)
    return parser


def build_settings(
    argv: Sequence[str], environ: Mapping[str, str]
) -> tuple[ConsumerSettings, Sink, str]:
    """Parse flags (falling back to ``AUDIT_CONSUMER_*``); return settings, sink and log level.

    Exits with status 2 and a usage message on a malformed flag; raises ConfigError for
    combinations that are wrong or files that cannot be read.
    """
    args: argparse.Namespace = build_parser(environ).parse_args(argv)
    if args.sink is None:
        raise ConfigError(
            f"--sink is required: one of {', '.join(sorted(SINKS))}; or a subcommand: query, "
            "rules test (audit-consumer --help)"
        )
    if (args.include or args.exclude) and args.group is None:
        log.warning(
            "filters under the default group audit-%s: this run commits that group's offsets, "
            "and the events it filters out are skipped for the group too; try filters with "
            "--group NAME (a group of their own)",
            args.sink,
        )
    if args.dedupe_window < 0:
        raise ConfigError(f"--dedupe-window must be 0 or more, got {args.dedupe_window}")
    if args.retry_backoff_max < args.retry_backoff:
        raise ConfigError("--retry-backoff-max must not be below --retry-backoff")
    settings = ConsumerSettings(
        sink=args.sink,
        kafka=kafka_connection_from_args(args),
        topic=args.topic,
        dead_letter_topic=args.dead_letter_topic,
        group=args.group or f"audit-{args.sink}",
        client_id=args.client_id,
        start_from=args.start_from,
        max_batch=args.max_batch,
        session_timeout=args.session_timeout,
        shutdown_grace=args.shutdown_grace,
        retry_backoff=args.retry_backoff,
        retry_backoff_max=args.retry_backoff_max,
        max_attempts=args.max_attempts,
        dedupe_window=args.dedupe_window,
        event_filter=EventFilter.parse(args.include, args.exclude),
        metrics_listen=args.metrics_listen,
        stall_timeout=args.stall_timeout,
        group_lag_interval=args.group_lag_interval,
    )
    return settings, SINKS[args.sink].from_args(args), args.log_level
