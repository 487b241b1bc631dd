"""What the relay's exit status tells the orchestrator (and an operator reading it) at shutdown.

Every path of a stop either got each accepted event into Kafka, kept it on the spool, or never
acknowledged it to the sender; the status says which of those a stop ended in.
"""

from __future__ import annotations

from collections.abc import Iterable

DELIVERED = 0
"""Stopped with nothing left: every event answered 200 is in Kafka."""
FAILED = 1
"""A worker crashed or its shutdown could not finish; see the log."""
CONFIG = 2
"""Bad flags or an unusable file: nothing was served."""
SPOOLED = 3
"""Stopped with events on the spool (answered 200, fsynced, not yet in Kafka): a relay started on
the same ``--spool-dir`` delivers them."""
KAFKA_UNAVAILABLE = 4
"""Stopped while Kafka was not acknowledging, with nothing on a spool: requests Kafka did not
acknowledge were answered 503 (their senders send them again), none was acknowledged."""

# Which of several workers' statuses the relay reports: the one that asks most of an operator.
_PRECEDENCE = (FAILED, CONFIG, SPOOLED, KAFKA_UNAVAILABLE, DELIVERED)


def combined(statuses: Iterable[int | None]) -> int:
    """The relay's status from its workers' (None or an unknown status: the worker failed)."""
    seen = {status if status in _PRECEDENCE else FAILED for status in statuses}
    return next((status for status in _PRECEDENCE if status in seen), DELIVERED)


HELP = """exit status:
  0  stopped with every event answered 200 in Kafka
  1  a worker failed or could not finish its shutdown (see the log)
  2  bad flags, or a file or directory they name cannot be used
  3  stopped with events on the spool: answered 200 and fsynced, not yet in Kafka; a relay
     started on the same --spool-dir delivers them
  4  stopped while Kafka did not acknowledge, with nothing on a spool: what Kafka did not
     acknowledge was answered 503 and is sent again by the apiserver; nothing acknowledged
     was lost"""
