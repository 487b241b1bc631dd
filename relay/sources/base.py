"""The contract every audit source implements; ``relay.sources.SOURCES`` lists them by kind.

A source reads audit events from where a cluster leaves them (a file, a cloud's log service)
and hands them to ``relay.sources.runner.SourceRunner``, which owns everything else: building
the records (``relay.events.build``: redaction, truncation, dead letters, headers), delivering
them (``relay.spool.delivery``: Kafka, or the spool), the checkpoint, metrics and health.

Who calls what, and when (the runner, one call at a time):

- ``add_arguments(parser)`` once per program start: the source's own flags, named after it
  (``--path``, ``--log-group``); each gets an ``AUDIT_RELAY_*`` environment variable.
- ``from_args(args)`` builds the source without I/O; raises ``ConfigError``.
- ``read(position)`` once, with the position of the last checkpoint (None on a first start):
  an async iterator of ``Chunk``\\ s, in the order of the source, without end. The runner
  delivers each chunk's items and only then records its ``position`` as the checkpoint, so a
  source resumes from any position it yielded. A source waits inside ``read`` when nothing is
  new; it raises ``audit_common.errors.AuditRelayError`` subclasses (``SourceError`` when the
  place it reads from fails for good), and retries what is temporary itself, counting it with
  ``on_error``. The runner closes the iterator (``aclose``) when it stops, so a source that
  owns a client opens it inside ``read`` with ``async with``.
- ``acknowledge(position)`` after each chunk is delivered and its checkpoint file written: a
  source whose service keeps the checkpoint (a Kafka consumer group's offsets, a subscription's
  acks) records it there. Redelivery by the service after a crash is counted as a repeat.

A position is what the source needs to resume: a JSON object, kept by the runner in the
checkpoint file under ``--checkpoint-dir``.
"""

from __future__ import annotations

import abc
import argparse
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from audit_common.options import EnvArgumentParser

Position = dict[str, Any]
# Called by a source for each temporary failure it retries, with a short kind ("throttled").
OnError = Callable[[str], None]


@dataclass(frozen=True)
class Chunk:
    """What a source read: audit events, each the JSON text of one ``audit.k8s.io`` Event as
    the apiserver wrote it (not parsed: the build path reads it), the position after them, and
    how current they are."""

    items: list[bytes]
    position: Position
    # Unix time of the newest entry the source knows of (a file's mtime, a stream's last
    # ingestion), or None when unknown; with ``caught_up`` it gives the lag metric.
    newest: float | None = None
    # True when nothing newer than these items was there to read.
    caught_up: bool = False
    # Entries read and left out because they are not audit events by design (records of other
    # categories in a shared hub, another service's log entries on a shared subscription):
    # ``audit_source_entries_skipped_total``; acknowledged with the chunk.
    skipped: int = 0
    # Items the source knows were delivered before a restart, read again because its service
    # had not recorded that (offsets not yet committed): ``audit_source_events_repeated_total``.
    repeated: int = 0


class Source(abc.ABC):
    """One place audit events are read from; one instance per ``audit-source`` process."""

    kind: ClassVar[str]

    @classmethod  # noqa: B027 - an optional hook: a source without flags of its own inherits it
    def add_arguments(cls, parser: EnvArgumentParser) -> None:
        """Declare this source's flags with ``parser.add_option``."""

    @classmethod
    @abc.abstractmethod
    def from_args(cls, args: argparse.Namespace) -> Source:
        """Build the source from parsed flags, without I/O. Raises ConfigError."""

    @abc.abstractmethod
    def read(self, position: Position | None, on_error: OnError) -> AsyncGenerator[Chunk, None]:
        """The chunks from ``position`` on (from the source's start when None), without end."""

    async def acknowledge(self, position: Position) -> None:  # noqa: B027 - optional hook
        """Record in the service that everything up to ``position`` is delivered; nothing for a
        source whose checkpoint file is enough. Called by the runner only from inside ``read``'s
        lifetime. Raises ``SourceError`` only when acknowledging can never succeed."""
