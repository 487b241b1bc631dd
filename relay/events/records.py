"""The unit the relay hands to Kafka (or to its spool): one message, fully encoded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    """One Kafka message: built by ``relay.events.build``, published by ``relay.kafka.publisher``.

    ``topic`` is a role, not a name: ``"events"`` or ``"dead_letter"``; the publisher maps it to
    the configured topic, so a spooled record still lands right after a topic rename.
    """

    topic: str
    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None

    @property
    def size(self) -> int:
        """Bytes this record weighs in memory and on the wire, roughly."""
        key = len(self.key) if self.key else 0
        return len(self.value) + key + sum(len(name) + len(value) for name, value in self.headers)


EVENTS = "events"
DEAD_LETTER = "dead_letter"
