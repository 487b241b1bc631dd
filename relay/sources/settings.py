"""``audit-source``'s settings: one frozen dataclass and the source, built in one place from
flags and environment. The flags of the way to Kafka are the relay's own
(``relay.settings.add_publishing_arguments``: same names, same ``AUDIT_RELAY_*`` variables)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from audit_common.errors import ConfigError
from audit_common.options import EnvArgumentParser, host_port, positive_float
from relay import exit_status
from relay.events.redact import RedactionSettings, redaction_settings_from_args
from relay.kafka.publisher import PublisherSettings
from relay.settings import (
    ENV_PREFIX,
    add_publishing_arguments,
    delivery_settings_from_args,
    publisher_settings_from_args,
)
from relay.sources.base import Source
from relay.spool.delivery import DeliverySettings


@dataclass(frozen=True)
class SourceSettings:
    """What one ``audit-source`` process runs with, besides its source."""

    publisher: PublisherSettings
    checkpoint_dir: Path
    cluster: str
    listen: tuple[str, int]
    delivery: DeliverySettings
    redaction: RedactionSettings


def build_parser(
    sources: Mapping[str, type[Source]], environ: Mapping[str, str]
) -> EnvArgumentParser:
    parser = EnvArgumentParser(
        prog="audit-source",
        description=(
            "Read kube-apiserver audit events from where a cluster without a webhook leaves "
            "them, and publish them as audit-relay does: one Kafka message per event, the same "
            "records, redaction, dead letters and spool. The checkpoint is recorded only once "
            "Kafka acknowledged (or the spool holds) what came before it."
        ),
        epilog=exit_status.HELP,
        env_prefix=ENV_PREFIX,
        environ=environ,
    )
    parser.add_argument("kind", choices=sorted(sources), help="the kind of source")
    add = parser.add_option
    add(
        "--checkpoint-dir",
        help="directory of the checkpoint file (KIND.json): where reading resumes (required)",
    )
    add(
        "--listen",
        type=host_port,
        default="0.0.0.0:8081",
        help="HOST:PORT of /healthz, /readyz and /metrics",
    )
    add(
        "--from-start",
        action="store_true",
        help="on a first start (no checkpoint), read everything the source still holds "
        "(file: every rotated and gzipped file, oldest first); otherwise begin at its end",
    )
    add(
        "--poll-interval",
        type=positive_float,
        default=0.25,
        help="seconds between looks for new entries once everything there was read",
    )
    add_publishing_arguments(parser)
    for source in sources.values():
        source.add_arguments(parser)
    return parser


def build_settings(
    argv: Sequence[str], environ: Mapping[str, str], sources: Mapping[str, type[Source]]
) -> tuple[SourceSettings, Source, str]:
    """Parse flags (falling back to ``AUDIT_RELAY_*`` variables); return the settings, the
    source and the log level. Exits with status 2 on a malformed flag; raises ConfigError for a
    missing or wrong one."""
    args: argparse.Namespace = build_parser(sources, environ).parse_args(argv)
    if not args.checkpoint_dir:
        raise ConfigError("--checkpoint-dir is required")
    source = sources[args.kind].from_args(args)
    settings = SourceSettings(
        publisher=publisher_settings_from_args(args),
        checkpoint_dir=Path(args.checkpoint_dir),
        cluster=args.cluster,
        listen=args.listen,
        delivery=delivery_settings_from_args(args),
        redaction=redaction_settings_from_args(args),
    )
    return settings, source, args.log_level
