"""Retrying a source's calls to the service it reads from, with jittered exponential backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from relay.sources.base import OnError

log = logging.getLogger(__name__)

T = TypeVar("T")
# The kind of a temporary failure (counted with ``on_error``), or None for an exception that is
# not the service's (raised as it is); raises ``SourceError`` for a refusal that lasts.
Classify = Callable[[Exception], str | None]
_FIRST_BACKOFF_S = 0.5


async def with_retries(
    call: Callable[[], Awaitable[T]],
    on_error: OnError,
    what: str,
    classify: Classify,
    *,
    max_backoff: float,
) -> T:
    """``call()``, retried while ``classify`` names its failure, each counted with ``on_error``
    and waited out (doubling up to ``max_backoff``, jittered so that replicas spread out).
    Raises what ``classify`` raises, and what it does not name."""
    delay = min(_FIRST_BACKOFF_S, max_backoff)
    while True:
        try:
            return await call()
        except Exception as exc:
            kind = classify(exc)
            if kind is None:
                raise
            reason = str(exc)
        on_error(kind)
        log.warning("%s: %s; retrying in %.1fs", what, reason, delay)
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, max_backoff)
