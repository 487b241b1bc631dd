"""Writing a batch of events to the sink, and what does not go there to the dead-letter topic.

Used by ``consumers.consume_loop.ConsumeLoop``, which retries these with backoff and decides
when to write a batch one event at a time (``consumers.retrying.Retrier`` sorts the failures).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from audit_common.errors import AuditRelayError, ConfigError
from audit_common.kafka_producer import RecoveringProducer
from audit_common.kafka_topics import DEFAULT_MAX_MESSAGE_BYTES
from consumers.cluster_stats import ClusterStats
from consumers.dead_letters import Letter, letter_of_event, send_letters
from consumers.events import ConsumedEvent
from consumers.metrics import ConsumerMetrics
from consumers.sinks import Sink
from consumers.sinks.base import BatchRefused, EventsRefused, failure_text

log = logging.getLogger(__name__)


class SinkWriter:
    """One consumer's sink and dead-letter topic, written with the producer the loop holds.

    ``letter_limit`` is the dead-letter topic's ``max.message.bytes``, which the runner reads
    at start. Every method raises what the sink raises (SinkError, ConfigError, anything it did
    not expect) and KafkaUnavailable when the dead letters cannot be sent.
    """

    def __init__(
        self, sink: Sink, topic: str, metrics: ConsumerMetrics, clusters: ClusterStats
    ) -> None:
        self.sink = sink
        self.topic = topic
        self.metrics = metrics
        self.letter_limit = DEFAULT_MAX_MESSAGE_BYTES
        self._clusters = clusters

    async def write(self, producer: RecoveringProducer, events: Sequence[ConsumedEvent]) -> None:
        """Write and flush ``events``; those the sink refuses for good go to the dead letters."""
        started = time.monotonic()
        refused: list[tuple[ConsumedEvent, str]] = []
        try:
            await self.sink.write(events)
        except EventsRefused as exc:  # events it could not encode; it wrote the others
            refused.extend(exc.refused)
        try:
            await self.sink.flush()
        except EventsRefused as exc:  # events the destination refused; it took the others
            refused.extend(exc.refused)
        written = events
        if refused:
            # By position, not identity: a sink may refuse the cleaned copy it made of an event.
            first = {
                (e.topic, e.partition, e.offset): (e, reason) for e, reason in reversed(refused)
            }
            refused = list(first.values())
            letters = [letter_of_event(event, reason, self.sink.name) for event, reason in refused]
            await self.dead_letter(producer, letters)
            self.metrics.refused.inc(len(letters))
            written = [e for e in events if (e.topic, e.partition, e.offset) not in first]
        self.metrics.write_seconds.observe(time.monotonic() - started)
        self.metrics.written.inc(len(written))
        self._clusters.written(written)

    async def write_one_by_one(
        self, producer: RecoveringProducer, events: Sequence[ConsumedEvent]
    ) -> None:
        """Write ``events`` one at a time, to find those that fail alone: each the destination
        refuses (``BatchRefused``) or that raises what the sink did not expect goes to the dead
        letters with the reason. A temporary failure (a retriable error) propagates, and the
        runner tries this again; ConfigError too, and stops the consumer."""
        letters: list[Letter] = []
        unexpected = 0
        for event in events:
            try:
                await self.write(producer, [event])
            except BatchRefused as exc:
                letters.append(letter_of_event(event, str(exc), self.sink.name))
            except AuditRelayError:
                raise
            except Exception as exc:
                letters.append(letter_of_event(event, failure_text(exc), self.sink.name))
                unexpected += 1
        if len(events) > 1 and len(letters) == len(events) and not unexpected:
            # Not one event: the destination refuses everything (a wrong format or endpoint).
            raise ConfigError(
                f"the {self.sink.name} sink's destination refused each of {len(events)} events "
                f"sent alone, the first with: {letters[0].reason}"
            )
        if letters:
            await self.dead_letter(producer, letters)
            self.metrics.failed.inc(unexpected)
            self.metrics.refused.inc(len(letters) - unexpected)
        log.info(
            "wrote %d events one by one: %d dead-lettered (%d for an unexpected error)",
            len(events),
            len(letters),
            unexpected,
        )

    async def dead_letter(self, producer: RecoveringProducer, letters: Sequence[Letter]) -> None:
        """Send ``letters`` to the dead-letter topic and await acks; raises KafkaUnavailable."""
        await send_letters(producer, self.topic, letters, self.letter_limit)
        self.metrics.dead_lettered.inc(len(letters))
        log.warning(
            "sent %d messages to %s: %s",
            len(letters),
            self.topic,
            letters[0].reason,
        )
