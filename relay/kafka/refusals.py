"""What the relay dead-letters for a record Kafka refuses for itself.

A broker fails a whole batch for one record in it that it will never take, however often it is
sent: over the topic's ``max.message.bytes`` (MESSAGE_TOO_LARGE, 10), a batch over it
(RECORD_LIST_TOO_LARGE, 18), a timestamp outside the topic's window (INVALID_TIMESTAMP, 32), a
record it cannot read (CORRUPT_MESSAGE, 2). Those are permanent for that record and say nothing
about the others: the publisher sends the failed batch's records one batch each to find it, and
dead-letters it with the broker's reason. Every other failure (a broker down or restarting, a
producer whose sequence numbers the broker no longer accepts, a missing acknowledgement) is the
cluster's or the producer's, retriable: the records are sent again on a new producer, or the
request is answered 503 (or spooled) for the sender to try again. Which errors are the record's
is said in one place for every producer: ``audit_common.kafka_producer.refused_for_itself``.
"""

from __future__ import annotations

from audit_common.headers import CLUSTER
from relay.events.dead_letters import dead_letter
from relay.events.records import DEAD_LETTER, OutboundRecord


def refusal_record(record: OutboundRecord, error: BaseException, limit: int) -> OutboundRecord:
    """What goes to the dead-letter topic for ``record``, which Kafka refused with ``error``:
    its value (cut to ``limit`` bytes; nothing of it when it was a dead letter refused already),
    the reason, and its cluster."""
    cluster = next((value.decode() for name, value in record.headers if name == CLUSTER), "")
    if record.topic == DEAD_LETTER:
        limit = 0  # refused again: the reason and the size are what can still be kept
    return dead_letter(record.value, f"Kafka refused: {error}", cluster, limit)
