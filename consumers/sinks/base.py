"""The contract every sink implements; ``consumers.sinks.SINKS`` lists them by name.

Adding a sink means adding one module here with one ``Sink`` subclass, and one line in
``SINKS``. The runner owns everything else: decoding, filters, duplicate suppression, retries,
offset commits, metrics.
"""

from __future__ import annotations

import abc
import argparse
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import ClassVar, Self, TypeVar

from prometheus_client import CollectorRegistry

from audit_common.errors import SinkError
from audit_common.options import EnvArgumentParser
from consumers.events import ConsumedEvent


class Sink(abc.ABC):
    """Where one consumer group writes audit events; one instance per consumer process.

    Who calls what, and when (``consumers.runner.Runner`` and its ``consumers.consume_loop``,
    one call at a time, never concurrently):

    - ``open()`` once, before the first ``write``; connects or opens files.
    - ``write(events)`` with each batch of events that passed the filters, in offset order per
      partition; it may buffer.
    - ``flush()`` after each ``write``: when it returns, everything written so far is durable
      (fsynced, committed to the database, acknowledged by the server). Only then does the
      runner commit the batch's Kafka offsets.
    - ``close()`` once at shutdown, after the last ``flush``; also after a failed ``open``.
      ``open`` and ``close`` are idempotent; ``async with sink:`` opens and closes.

    Failures are of two kinds. Temporary ones (the network, a server or database down, 5xx or
    429): ``open``, ``write`` and ``flush`` raise ``audit_common.errors.SinkError`` (translate
    foreign exceptions with ``raise SinkError(...) from exc``), and the runner retries the same
    batch, ``write`` then ``flush``, with exponential backoff until it succeeds. Failures that
    repeat for one event (it cannot be encoded, the destination refuses its value, it is too
    large for the destination): ``write`` (for what it builds itself, with ``build_each``) or
    ``flush`` (for what the destination refused, once the rest is durable) raises
    ``EventsRefused`` naming those events; the runner sends them to the dead-letter topic, with
    the sink and the reason in headers, and commits the batch. ``BatchRefused`` says the
    destination refused the batch for good without saying which event: the runner then writes
    the events one by one. Any other exception is one the sink did not expect: the runner
    tries the batch again ``--max-attempts`` times, then one event at a time, and dead-letters
    the events that still fail, with the exception's text. A retry may deliver events the sink
    already has: delivery is at least once, so a sink that can be idempotent (a unique key)
    should be. Reconnecting after a failure is the sink's job, inside ``write``/``flush``; a
    failed ``write`` or ``flush`` leaves nothing of its batch buffered.

    Options: ``add_arguments`` declares the sink's own flags on the program's parser, named
    after the sink (``--csv-columns``, ``--postgres-dsn``); each gets an ``AUDIT_CONSUMER_*``
    environment variable. ``--output`` is shared by the sinks that write a stream. ``from_args``
    builds the sink from the parsed flags without doing I/O, and raises ``ConfigError``.

    Holding events: a sink that gathers events across batches into larger writes (the archive)
    lists in ``held()`` the first offset per partition it took but has not made durable; the
    runner commits no offset at or past it, calls ``flush`` after idle polls too (so the sink
    can write what is due by age), and ``drain`` before a final commit (stop, rebalance).
    ``takes_every_event`` asks the runner for every decoded event: no ``--include``/
    ``--exclude`` and no duplicate suppression.
    """

    name: ClassVar[str]
    takes_every_event: ClassVar[bool] = False

    @classmethod  # noqa: B027 - an optional hook: a sink without flags of its own inherits it
    def add_arguments(cls, parser: EnvArgumentParser) -> None:
        """Declare this sink's flags with ``parser.add_option``; called once per program start."""

    def register_metrics(self, registry: CollectorRegistry) -> None:  # noqa: B027 - optional
        """Add this sink's own metrics to the consumer's registry. Called once by
        ``consumers.__main__`` before the runner starts; most sinks have none."""

    @classmethod
    @abc.abstractmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        """Build the sink from parsed flags (no I/O yet); raises ConfigError on a bad value."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Get ready to write. Raises SinkError (retried by the runner) or ConfigError."""

    @abc.abstractmethod
    async def write(self, events: Sequence[ConsumedEvent]) -> None:
        """Write (or buffer) one batch; ``events`` is never empty. Raises SinkError."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Make everything written durable before offsets are committed. Raises SinkError."""

    def held(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition), the first offset taken but not yet durable; most sinks hold
        nothing past ``flush``."""
        return {}

    async def drain(self) -> None:
        """Make everything held durable, before the runner's last commit of some partitions.
        A sink that fails here keeps what it holds (uncommitted, so it is consumed again; it may
        write it later too) and raises SinkError."""
        await self.flush()

    @abc.abstractmethod
    async def close(self) -> None:
        """Release files and connections; never raises for a sink that was not opened."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class EventsRefused(SinkError):
    """Raised by ``Sink.flush`` when the destination took the batch but refused ``refused`` (each
    event with the destination's reason) for good, or by ``Sink.write`` for the events it could
    not build a record of (``build_each``) once it wrote the others; sending them again will
    not help."""

    retriable = False

    def __init__(self, refused: Sequence[tuple[ConsumedEvent, str]]) -> None:
        super().__init__(f"{len(refused)} events refused for good, the first: {refused[0][1]}")
        self.refused = list(refused)


class BatchRefused(SinkError):
    """Raised by ``Sink.flush`` when the destination refused the whole batch for good (a 400 or
    413 for the request) without naming an event: the runner writes the events one at a time,
    and dead-letters each one the destination refuses alone."""

    retriable = False


# What encoding one event raises every time it is tried: bad text (UnicodeError), nesting
# deeper than a library or Python goes (RecursionError; orjson's recursion limit and a value
# it cannot write are a TypeError), a number out of range (OverflowError, ValueError).
REPEATING: tuple[type[Exception], ...] = (
    UnicodeError,
    RecursionError,
    TypeError,
    ValueError,
    OverflowError,
)

Built = TypeVar("Built")


def failure_text(exc: BaseException) -> str:
    """An exception as a dead letter's ``reason`` says it: its type and its message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def build_each(
    events: Sequence[ConsumedEvent], build: Callable[[ConsumedEvent], Built]
) -> tuple[list[tuple[ConsumedEvent, Built]], list[tuple[ConsumedEvent, str]]]:
    """``build`` applied to each event, apart: what it built for each event it could, and each
    event it raised a ``REPEATING`` exception for, with the reason. Called by sinks in
    ``write``, which write the built ones and then raise ``EventsRefused`` for the others."""
    built: list[tuple[ConsumedEvent, Built]] = []
    refused: list[tuple[ConsumedEvent, str]] = []
    for event in events:
        try:
            built.append((event, build(event)))
        except REPEATING as exc:
            refused.append((event, f"cannot encode the event: {failure_text(exc)}"))
    return built, refused
