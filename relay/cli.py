"""``audit-relay``: parse settings, configure logging, handle signals, run the workers.

The entry point (``python -m relay`` runs it); the only module that touches signals or
``os.environ``. It is a module of its own, not ``__main__``, so that worker processes
(multiprocessing's spawn) can import their target function by name.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from multiprocessing.connection import wait

from audit_common.errors import ConfigError
from audit_common.gc_policy import tune_for_bulk_json
from audit_common.logs import configure_logging
from relay import exit_status
from relay.settings import RelaySettings, build_settings

log = logging.getLogger("relay")


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT; called inside the running loop of an entry point (a
    relay worker, ``audit-source``)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run_worker(settings: RelaySettings, level: str, reuse_port: bool) -> int:
    """Run one worker until SIGTERM or SIGINT; the entry point of each worker process too."""
    from relay.edge.server import serve

    configure_logging(level)

    async def run() -> int:
        return await serve(settings, stop_on_signals(), reuse_port=reuse_port)

    tune_for_bulk_json()
    try:
        return asyncio.run(run())
    except ConfigError as exc:  # found only when the worker starts, e.g. an unusable --spool-dir
        print(f"audit-relay: error: {exc}", file=sys.stderr)
        return exit_status.CONFIG


def _worker_process(settings: RelaySettings, level: str) -> None:
    sys.exit(run_worker(settings, level, reuse_port=True))


def supervise(settings: RelaySettings, level: str) -> int:
    """Start ``settings.workers`` processes on one port; forward SIGTERM/SIGINT to them.

    A worker that dies on its own takes the others down (exit 1), so the orchestrator restarts
    the relay whole rather than running it short-handed without anyone noticing. Otherwise the
    status is the workers' combined (``relay.exit_status.combined``).
    """
    metrics_dir = tempfile.mkdtemp(prefix="audit-relay-metrics-")
    # prometheus_client reads this when imported; the spawned workers inherit it.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    settings = replace(settings, metrics_dir=metrics_dir)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker_process, args=(settings, level), name=f"worker-{index}")
        for index in range(settings.workers)
    ]
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.start()
    if stopping:  # a signal while they started reached only those started before it
        forward(signal.SIGTERM, None)
    log.info("started %d workers", len(workers))
    statuses: list[int | None] = []
    remaining = list(workers)
    try:
        while remaining:
            for sentinel in wait([worker.sentinel for worker in remaining]):
                worker = next(w for w in remaining if w.sentinel == sentinel)
                worker.join()
                remaining.remove(worker)
                statuses.append(worker.exitcode)
                if not stopping:
                    name, code = worker.name, worker.exitcode
                    log.error("%s exited with %s; stopping the others", name, code)
                    statuses.append(exit_status.FAILED)
                    forward(signal.SIGTERM, None)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    status = exit_status.combined(statuses)
    log.info("all workers stopped (exit status %d)", status)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()  # settings may warn (e.g. about a random redaction key) while parsed
    try:
        settings, level = build_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        print(f"audit-relay: error: {exc}", file=sys.stderr)
        return exit_status.CONFIG
    configure_logging(level)
    if settings.workers == 1:
        return run_worker(settings, level, reuse_port=False)
    return supervise(settings, level)
