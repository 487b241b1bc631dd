"""The consumers' Kafka producers (the dead letters of every sink, the alerts sink's alerts):
compressed, and sized to the topic they write.

aiokafka checks each record's uncompressed size against ``max_request_size`` before sending
it; set to the topic's ``max.message.bytes``, a record the broker would refuse is refused at
``send()`` (``MessageSizeTooLargeError``, which the callers treat as permanent for that
record) and never reaches the broker, where a refused batch would leave the idempotent
producer's sequence numbers stuck. zstd compresses audit JSON about tenfold on the wire and
on disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from audit_common.kafka_connection import KafkaConnection
from audit_common.kafka_topics import DEFAULT_MAX_MESSAGE_BYTES, ensure_topics, max_message_bytes

log = logging.getLogger(__name__)

COMPRESSION = "zstd"


@dataclass(frozen=True)
class NewTopicSpec:
    """How to create a topic that does not exist, as the relay creates its own."""

    partitions: int
    replication_factor: int


async def topic_limit(
    kafka: KafkaConnection, topic: str, client_id: str, create: NewTopicSpec | None = None
) -> int:
    """``topic``'s ``max.message.bytes``, after creating it with ``create`` when given.

    Called once at start by the runner (dead-letter topic) and the alerts sink. Without
    ``create``, a broker that cannot be asked gives the broker's default, with a warning;
    with it, raises KafkaError (the alerts sink retries opening).
    """
    admin = AIOKafkaAdminClient(client_id=f"{client_id}-admin", **kafka.client_kwargs())
    try:
        await admin.start()
        if create is not None:
            await ensure_topics(admin, [topic], create.partitions, create.replication_factor)
        return await max_message_bytes(admin, topic)
    except KafkaError as exc:
        if create is not None:
            raise
        log.warning(
            "cannot read max.message.bytes of %s (%s); records are kept within %d bytes",
            topic,
            exc,
            DEFAULT_MAX_MESSAGE_BYTES,
        )
        return DEFAULT_MAX_MESSAGE_BYTES
    finally:
        await admin.close()


def producer_for(kafka: KafkaConnection, client_id: str, limit: int) -> AIOKafkaProducer:
    """An idempotent producer (acks=all) compressing with zstd, for records up to ``limit``."""
    return AIOKafkaProducer(
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        compression_type=COMPRESSION,
        max_request_size=limit,
        **kafka.client_kwargs(),
    )
