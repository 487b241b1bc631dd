"""Topics as both programs create and size them: the relay its events and dead-letter topics,
the alerts consumer its alerts topic; and the record size a topic takes, for producers.

With ``acks=all`` a broker acknowledges a record once every in-sync replica has it; with a
replication factor of 1, or ``min.insync.replicas`` of 1, that can be one broker. A topic is
created with the replication factor given and ``min.insync.replicas`` = min(2, factor).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)

MIN_INSYNC = "min.insync.replicas"
MAX_MESSAGE_BYTES = "max.message.bytes"
# The broker's default message.max.bytes (1 MiB and a batch header's 12 bytes).
DEFAULT_MAX_MESSAGE_BYTES = 1048588


def min_insync_replicas(replication_factor: int) -> int:
    """What a created topic gets: 2 where there are two replicas to require."""
    return min(2, replication_factor)


async def ensure_topics(
    admin: AIOKafkaAdminClient, names: Iterable[str], partitions: int, replication_factor: int
) -> None:
    """Create those of ``names`` that do not exist. Raises KafkaError."""
    existing = set(await admin.list_topics())
    config = {MIN_INSYNC: str(min_insync_replicas(replication_factor))}
    for name in names:
        if name in existing:
            continue
        try:
            topic = NewTopic(name, partitions, replication_factor, topic_configs=config)
            await admin.create_topics([topic])
            log.info(
                "created topic %s: %d partitions, replication factor %d, %s %s",
                name,
                partitions,
                replication_factor,
                MIN_INSYNC,
                config[MIN_INSYNC],
            )
        except TopicAlreadyExistsError:
            pass  # another worker or replica created it first


async def max_message_bytes(admin: AIOKafkaAdminClient, topic: str) -> int:
    """The largest record batch ``topic`` takes (its ``max.message.bytes``, the broker's
    default when it sets none). Raises KafkaError."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {MAX_MESSAGE_BYTES: None})
    for response in await admin.describe_configs([resource]):
        for described in response.to_object()["resources"]:
            for entry in described["config_entries"]:
                if entry["config_names"] == MAX_MESSAGE_BYTES and entry["config_value"]:
                    return int(entry["config_value"])
    return DEFAULT_MAX_MESSAGE_BYTES
