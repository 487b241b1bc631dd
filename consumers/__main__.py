"""``audit-consumer``: parse settings, configure logging, handle signals, run the consumer.

The main form is ``audit-consumer --sink NAME [flags]``. The subcommands ``query`` and
``rules test`` are dispatched on the first argument before the consumer's flags.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from audit_common.errors import ConfigError, KafkaUnavailable
from audit_common.gc_policy import tune_for_bulk_json
from audit_common.logs import configure_logging
from consumers.group_lag import GroupLagExporter
from consumers.metrics import ConsumerMetrics, MetricsServer
from consumers.query import run_query
from consumers.rules.command import run_rules
from consumers.runner import Runner
from consumers.settings import SUBCOMMANDS, USAGE, ConsumerSettings, build_settings
from consumers.sinks import Sink

log = logging.getLogger("consumers")


async def consume(settings: ConsumerSettings, sink: Sink) -> int:
    """Run until SIGTERM/SIGINT; 0 after a clean drain, 1 when a batch was left uncommitted."""
    metrics = ConsumerMetrics()
    sink.register_metrics(metrics.registry)
    runner = Runner(settings, sink, metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runner.stop)
    server = group_lag = None
    if settings.metrics_listen is not None:
        server = MetricsServer(metrics, runner.health, *settings.metrics_listen)
        await server.start()
        group_lag = GroupLagExporter(
            settings.kafka, settings.topic, settings.group_lag_interval, metrics, runner.health
        )
        await group_lag.start()
    try:
        return 0 if await runner.run() else 1
    finally:
        if group_lag is not None:
            await group_lag.stop()
        if server is not None:
            await server.stop()


def run_consumer(argv: Sequence[str]) -> int:
    configure_logging()  # settings may warn while they are parsed
    try:
        settings, sink, level = build_settings(argv, os.environ)
    except ConfigError as exc:
        if not argv:  # a bare ``audit-consumer``: show what it can do
            print(f"usage: {USAGE}\n\n{SUBCOMMANDS}", file=sys.stderr)
        print(f"audit-consumer: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(level)
    tune_for_bulk_json()
    try:
        return asyncio.run(consume(settings, sink))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except KafkaUnavailable as exc:
        log.error("%s", exc)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "query":
        return run_query(args[1:], os.environ)
    if args and args[0] == "rules":
        return run_rules(args[1:])
    return run_consumer(args)


if __name__ == "__main__":
    sys.exit(main())
