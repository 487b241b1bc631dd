"""The shape of every class that owns a resource: idempotent start/stop, and ``async with``."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class AsyncResource(abc.ABC):
    """Owns a connection, a task, a file or a socket between ``start()`` and ``stop()``.

    Both are idempotent, so that a shutdown path may call ``stop()`` whatever happened before;
    ``async with resource:`` starts it and stops it.
    """

    @abc.abstractmethod
    async def start(self) -> None:
        """Acquire the resource; a second call does nothing."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release the resource; safe to call when not started, and more than once."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
