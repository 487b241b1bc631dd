"""A few threads for the CPU-bound handling of large request bodies, off the event loop.

Splitting and building a body of tens of MB takes a worker's event loop for a good part of a
second; on the loop, that stalls every other request of the worker and every Kafka ack. Run in a
thread, the loop keeps serving: msgspec and orjson hold the GIL for each of their calls (the
envelope of a 60 MB EventList is one call of about 0.1 s), but between calls Python switches
threads every ``sys.getswitchinterval()`` (5 ms), and zstd compression (cramjam) releases the GIL.
The threads are few and the relay's own, so that large bodies take at most that many cores
and never queue ahead of the spool's writes in asyncio's default executor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from audit_common.resource import AsyncResource

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_THREADS = 2


class Offload(AsyncResource):
    """A small thread pool for work that would stall the event loop.

    ``relay.edge.app.build_app`` starts it when the application starts and stops it at the
    application's cleanup, after the requests in flight finished; ``start``/``stop`` are
    idempotent. What ``run`` is given must not touch the event loop or its objects.
    """

    def __init__(self, threads: int = DEFAULT_THREADS) -> None:
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="relay-body")

    async def stop(self) -> None:
        """Wait for the work already running (a body being built) and end the threads."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    async def run(self, work: Callable[[], T]) -> T:
        """``work()``, run in one of the threads; raises what it raises.

        Called by the webhook handler for a large body. Raises RuntimeError before ``start`` or
        after ``stop``. A cancelled caller does not stop ``work`` once it runs.
        """
        if self._executor is None:
            raise RuntimeError("Offload used before start() or after stop()")
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)
