"""The relay's topics: created when missing (``audit_common.kafka_topics``), and checked that an
acknowledgement means replicated.

With ``acks=all`` a broker acknowledges a record once every in-sync replica has it; with a
replication factor of 1, or ``min.insync.replicas`` of 1, that can be one broker, and a 200
the apiserver got then rests on one disk. The relay creates its topics with the replication
factor it is given and ``min.insync.replicas`` = min(2, factor), and warns at start about an
existing topic that lets an acknowledged event live on one broker only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from audit_common.kafka_topics import MIN_INSYNC, ensure_topics, min_insync_replicas

__all__ = ["ensure_topics", "min_insync_replicas", "warn_if_not_replicated"]

log = logging.getLogger(__name__)

_DESCRIBE_TRIES = 10
_DESCRIBE_PAUSE_S = 0.2


async def warn_if_not_replicated(admin: AIOKafkaAdminClient, names: Iterable[str]) -> None:
    """Log a warning for each topic whose acknowledged records may be on one broker only.

    Raises KafkaError when the brokers cannot be asked.
    """
    names = list(names)
    # A topic created a moment ago may be described before its partitions are: no replicas yet.
    for _ in range(_DESCRIBE_TRIES):
        described = await admin.describe_topics(names)
        if all(topic["partitions"] for topic in described):
            break
        await asyncio.sleep(_DESCRIBE_PAUSE_S)
    replicas = {
        topic["topic"]: min((len(p["replicas"]) for p in topic["partitions"]), default=0)
        for topic in described
    }
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, {MIN_INSYNC: None}) for name in names
    ]
    insync: dict[str, int] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            for entry in resource["config_entries"]:
                if entry["config_names"] == MIN_INSYNC:
                    insync[resource["resource_name"]] = int(entry["config_value"])
    for name in names:
        factor, required = replicas.get(name, 0), insync.get(name, 1)
        if factor < 2 or required < 2:
            log.warning(
                "topic %s: replication factor %d, %s %d: an event Kafka acknowledged may be on "
                "one broker only; use a replication factor of 3 and %s 2",
                name,
                factor,
                MIN_INSYNC,
                required,
                MIN_INSYNC,
            )
