"""What a consumer sends to the dead-letter topic: a message it cannot decode, or an event its
sink refused for good; each as consumed, with why and where it was read in headers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import ConsumerRecord

from audit_common.errors import KafkaUnavailable
from audit_common.headers import (
    CLUSTER,
    REASON,
    SCHEMA_VERSION,
    SCHEMA_VERSION_HEADER,
    SINK,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
)
from audit_common.kafka_producer import KafkaRecord, RecoveringProducer
from consumers.events import ConsumedEvent

# How long one batch of letters may take to be acknowledged, producer replacements included.
SEND_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Letter:
    """One message for the dead-letter topic; built by ``letter_of_record``/``letter_of_event``."""

    value: bytes | None
    key: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp: int | None
    topic: str
    partition: int
    offset: int
    reason: str
    sink: str | None = None


def letter_of_record(record: ConsumerRecord, reason: str) -> Letter:
    """A message that could not be decoded, as consumed, with its own key and headers."""
    return Letter(
        record.value,
        record.key,
        record.headers,
        record.timestamp,
        record.topic,
        record.partition,
        record.offset,
        reason,
    )


def letter_of_event(event: ConsumedEvent, reason: str, sink: str) -> Letter:
    """An event the sink ``sink`` refused for good, as consumed."""
    headers = [(CLUSTER, event.cluster.encode())] if event.cluster is not None else []
    key = event.audit_id.encode()
    return Letter(
        event.raw, key, headers, None, event.topic, event.partition, event.offset, reason, sink
    )


async def send_letters(producer: RecoveringProducer, topic: str, letters: Sequence[Letter]) -> None:
    """Send ``letters`` to ``topic`` and await every ack, on a new producer after a failed
    batch (``audit_common.kafka_producer``). Raises KafkaUnavailable when Kafka does not take
    them all within SEND_TIMEOUT_S, or refuses one."""
    records = [
        KafkaRecord(
            topic,
            letter.value,
            letter.key,
            [
                *((name, value) for name, value in letter.headers if name != SCHEMA_VERSION_HEADER),
                (SCHEMA_VERSION_HEADER, SCHEMA_VERSION),
                (REASON, letter.reason.encode()),
                *([(SINK, letter.sink.encode())] if letter.sink else []),
                (SOURCE_TOPIC, letter.topic.encode()),
                (SOURCE_PARTITION, str(letter.partition).encode()),
                (SOURCE_OFFSET, str(letter.offset).encode()),
            ],
            letter.timestamp,
        )
        for letter in letters
    ]
    results = await producer.send_all(records, SEND_TIMEOUT_S)
    refused = next((error for error in results if error is not None), None)
    if refused is not None:
        raise KafkaUnavailable(f"dead-letter topic {topic} refused a letter: {refused}")
