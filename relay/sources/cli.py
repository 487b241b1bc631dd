"""``audit-source KIND``: parse settings, configure logging, handle signals, run the source.

The entry point; the only module of ``relay.sources`` that touches signals or ``os.environ``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from audit_common.errors import ConfigError
from audit_common.logs import configure_logging
from relay import exit_status
from relay.cli import stop_on_signals
from relay.sources import SOURCES
from relay.sources.runner import run_source
from relay.sources.settings import build_settings


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    try:
        settings, source, level = build_settings(
            sys.argv[1:] if argv is None else argv, os.environ, SOURCES
        )
    except ConfigError as exc:
        print(f"audit-source: error: {exc}", file=sys.stderr)
        return exit_status.CONFIG
    configure_logging(level)

    async def run() -> int:
        return await run_source(settings, source, stop_on_signals())

    try:
        return asyncio.run(run())
    except ConfigError as exc:  # found only when started, e.g. an unusable --spool-dir
        print(f"audit-source: error: {exc}", file=sys.stderr)
        return exit_status.CONFIG


if __name__ == "__main__":
    sys.exit(main())
