"""What a consumer sends to the dead-letter topic: a message it cannot decode, or an event its
sink refused for good; each as consumed, with why and where it was read in headers.

A letter that would be larger than the topic takes is cut, as the relay's dead letters are: the
value keeps its first bytes, ``truncated-from-bytes`` says how long it was and ``digest`` (the
SHA-256 of the whole value, hex) names it, beside the reason and where it was read.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import ConsumerRecord
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

from audit_common.errors import KafkaUnavailable
from audit_common.headers import (
    CLUSTER,
    DIGEST,
    REASON,
    SCHEMA_VERSION,
    SCHEMA_VERSION_HEADER,
    SINK,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    TRUNCATED_FROM_BYTES,
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


# What a record adds to its key, value and headers: the batch's header (61 bytes), the record's
# own fields, and room for the headers a letter gains when it is cut.
_RECORD_OVERHEAD = 256
# Too large for the topic: the same letter is too large every time (permanent).
SIZE_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError)


def _headers(letter: Letter) -> list[tuple[str, bytes]]:
    return [
        *((name, value) for name, value in letter.headers if name != SCHEMA_VERSION_HEADER),
        (SCHEMA_VERSION_HEADER, SCHEMA_VERSION),
        (REASON, letter.reason.encode()),
        *([(SINK, letter.sink.encode())] if letter.sink else []),
        (SOURCE_TOPIC, letter.topic.encode()),
        (SOURCE_PARTITION, str(letter.partition).encode()),
        (SOURCE_OFFSET, str(letter.offset).encode()),
    ]


def cut(letter: Letter, limit: int) -> Letter:
    """``letter`` within a record of ``limit`` bytes: its value cut to what room is left (down
    to nothing), with ``truncated-from-bytes`` and ``digest``; as it is when it fits."""
    value = letter.value or b""
    size = len(value) + len(letter.key or b"")
    size += sum(len(name) + len(data) for name, data in _headers(letter)) + _RECORD_OVERHEAD
    if size <= limit:
        return letter
    room = max(0, len(value) - (size - limit))
    headers = [
        *letter.headers,
        (TRUNCATED_FROM_BYTES, str(len(value)).encode()),
        (DIGEST, hashlib.sha256(value).hexdigest().encode()),
    ]
    if len(letter.reason) > 4096:
        letter = dataclasses.replace(letter, reason=letter.reason[:4096] + "...")
    return dataclasses.replace(letter, value=value[:room], headers=headers)


async def send_letters(
    producer: RecoveringProducer, topic: str, letters: Sequence[Letter], limit: int
) -> None:
    """Send ``letters`` to ``topic``, each cut to a record of ``limit`` bytes, and await every
    ack, on a new producer after a failed batch (``audit_common.kafka_producer``). A letter the
    topic still refuses as too large is sent again with an empty value. Raises
    KafkaUnavailable when Kafka does not take them within SEND_TIMEOUT_S, or refuses one."""
    results = await producer.send_all(
        [_record(topic, cut(lt, limit)) for lt in letters], SEND_TIMEOUT_S
    )
    too_large = [
        lt for lt, error in zip(letters, results, strict=True) if isinstance(error, SIZE_ERRORS)
    ]
    if too_large:  # the broker's limit is lower than the one read, or aiokafka's own check
        results = [
            *(error for error in results if not isinstance(error, SIZE_ERRORS)),
            *await producer.send_all(
                [_record(topic, cut(lt, 0)) for lt in too_large], SEND_TIMEOUT_S
            ),
        ]
    refused = next((error for error in results if error is not None), None)
    if refused is not None:
        raise KafkaUnavailable(f"dead-letter topic {topic} refused a letter: {refused}")


def _record(topic: str, letter: Letter) -> KafkaRecord:
    return KafkaRecord(topic, letter.value, letter.key, _headers(letter), letter.timestamp)
