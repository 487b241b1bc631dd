"""The publisher against a real broker: one record batch per partition, partitioned as Java does."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import DefaultPartitioner

from audit_common.errors import KafkaUnavailable
from audit_common.kafka_connection import KafkaConnection
from relay.events.build import encode_event, event_headers
from relay.events.dead_letters import dead_letter
from relay.events.records import EVENTS, OutboundRecord
from relay.events.split import DEFAULT_API_VERSION
from relay.kafka.publisher import KafkaPublisher, PublisherSettings
from relay.metrics import RelayMetrics
from tests.support.kafka import LocalBroker, create_topic, read_topic, unique_topic
from tests.support.net import wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 12


@pytest.fixture
async def publisher(kafka_bootstrap: str) -> AsyncIterator[KafkaPublisher]:
    topic = unique_topic("publisher")
    settings = PublisherSettings(
        connection=KafkaConnection(bootstrap=kafka_bootstrap),
        topic=topic,
        dead_letter_topic=f"{topic}.dead-letter",
        partitions=PARTITIONS,
    )
    async with KafkaPublisher(settings, RelayMetrics()) as publisher:
        await wait_until(lambda: publisher.connected, timeout=30, what="producer connected")
        yield publisher


def record(audit_id: str, stage: str, index: int, request: object = None) -> OutboundRecord:
    """An event record as the relay builds it; ``index`` is its last field and timestamp."""
    event = {
        "level": "Request" if request is not None else "Metadata",
        "auditID": audit_id,
        "stage": stage,
        "requestURI": "/api/v1/namespaces/default/configmaps",
        "verb": "create",
        "stageTimestamp": "2023-11-14T22:13:20.000000Z",
        **({"requestObject": request} if request is not None else {}),
        "i": index,
    }
    headers = tuple(event_headers(event, DEFAULT_API_VERSION, "c"))
    value = encode_event(event, DEFAULT_API_VERSION)
    return OutboundRecord(EVENTS, value, audit_id.encode(), headers, 1_700_000_000_000 + index)


async def test_every_record_lands_once_in_the_partition_of_its_key(
    publisher: KafkaPublisher,
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(150)]
    stages = ("RequestReceived", "ResponseComplete")
    records = [record(audit_id, stage, i) for i, audit_id in enumerate(ids) for stage in stages]
    await publisher.publish(records[:100])
    await publisher.publish(records[100:])

    consumed = await read_topic(
        publisher.settings.connection.bootstrap, publisher.settings.topic, 300
    )
    assert len(consumed) == 300
    assert sorted(r.value for r in consumed) == sorted(r.value for r in records)
    partitioner = DefaultPartitioner()
    all_partitions = list(range(PARTITIONS))
    by_key: dict[bytes, list[str]] = {}
    for message in consumed:
        assert message.key is not None
        assert message.partition == partitioner(message.key, all_partitions, all_partitions)
        assert message.timestamp == 1_700_000_000_000 + int(message.value.split(b'"i":')[1][:-1])
        assert dict(message.headers)["cluster"] == b"c"
        by_key.setdefault(message.key, []).append(dict(message.headers)["stage"].decode())
    # Both stages of each request, in the order they were published.
    assert all(stages_seen == list(stages) for stages_seen in by_key.values())
    assert len({message.partition for message in consumed}) == PARTITIONS


async def test_a_request_larger_than_one_batch_is_split_and_all_acknowledged(
    publisher: KafkaPublisher,
) -> None:
    # 40 values of 100 KB on few keys: several partitions get more than one 1 MB batch.
    data = {"data": {"blob": "x" * 100_000}}
    records = [record(f"key-{i % 3}", "ResponseComplete", i, data) for i in range(40)]
    await publisher.publish(records)
    consumed = await read_topic(
        publisher.settings.connection.bootstrap, publisher.settings.topic, 40
    )
    assert sorted(m.value for m in consumed) == sorted(r.value for r in records)


async def test_records_without_key_go_to_the_dead_letter_topic(
    publisher: KafkaPublisher,
) -> None:
    records = [dead_letter(b"not json %d" % i, "not JSON", "c", 1000) for i in range(5)]
    await publisher.publish(records)
    settings = publisher.settings
    consumed = await read_topic(settings.connection.bootstrap, settings.dead_letter_topic, 5)
    assert sorted(m.value for m in consumed) == sorted(r.value for r in records)


async def test_publish_before_connecting_is_refused(kafka_bootstrap: str) -> None:
    settings = PublisherSettings(connection=KafkaConnection(bootstrap=kafka_bootstrap))
    with pytest.raises(KafkaUnavailable):
        await KafkaPublisher(settings, RelayMetrics()).publish([record("a", "ResponseComplete", 0)])


async def test_a_batch_the_broker_refuses_leaves_later_publishes_working(
    kafka_bootstrap: str,
) -> None:
    # aiokafka numbers a batch before sending it and never takes the numbers back: after one
    # refused batch, the old producer got OUT_OF_ORDER_SEQUENCE_NUMBER on every later publish.
    topic = unique_topic("refused")
    await create_topic(kafka_bootstrap, topic, config={"message.timestamp.after.max.ms": "60000"})
    settings = PublisherSettings(
        connection=KafkaConnection(bootstrap=kafka_bootstrap),
        topic=topic,
        dead_letter_topic=f"{topic}.dead-letter",
        ack_timeout=3,
    )
    metrics = RelayMetrics()
    async with KafkaPublisher(settings, metrics) as publisher:
        await wait_until(lambda: publisher.connected, timeout=30, what="producer connected")
        await publisher.publish([record("before", "ResponseComplete", 0)])
        an_hour_ahead = (time.time() + 3600) * 1000
        refused = record("refused", "ResponseComplete", 1)
        refused = OutboundRecord(EVENTS, refused.value, b"k", refused.headers, int(an_hour_ahead))
        await publisher.publish([refused])  # dead-lettered: the broker refuses it for itself
        await publisher.publish([record("after", "ResponseComplete", 2)])
    consumed = await read_topic(kafka_bootstrap, topic, 2)
    assert [orjson.loads(m.value)["auditID"] for m in consumed] == ["before", "after"]
    [dead] = await read_topic(kafka_bootstrap, f"{topic}.dead-letter", 1)
    assert b"InvalidTimestamp" in dict(dead.headers)["reason"]
    assert (metrics.registry.get_sample_value("relay_kafka_producer_restarts_total") or 0) >= 1
    assert (metrics.registry.get_sample_value("relay_records_resent_total") or 0) >= 1
    last_ack = metrics.registry.get_sample_value("relay_kafka_last_ack_timestamp_seconds")
    assert last_ack is not None and last_ack > time.time() - 60


async def test_created_topics_require_what_replicas_they_have_and_one_broker_is_warned_of(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    topic = unique_topic("durable")
    settings = PublisherSettings(
        connection=KafkaConnection(bootstrap=kafka_bootstrap),
        topic=topic,
        dead_letter_topic=f"{topic}.dead-letter",
    )
    with caplog.at_level(logging.WARNING, logger="relay.kafka.topics"):
        async with KafkaPublisher(settings, RelayMetrics()) as publisher:
            await wait_until(lambda: publisher.connected, timeout=30, what="producer connected")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})]
        )
    finally:
        await admin.close()
    [resource] = response.to_object()["resources"]
    [entry] = resource["config_entries"]
    assert entry["config_value"] == "1"  # min(2, replication factor 1)
    assert entry["config_source"] == 1  # set on the topic, not the broker's default
    warned = [r.getMessage() for r in caplog.records if "one broker only" in r.getMessage()]
    assert {message.split(":")[0] for message in warned} == {
        f"topic {topic}",
        f"topic {topic}.dead-letter",
    }


async def test_a_record_the_broker_refuses_for_itself_is_dead_lettered_and_the_rest_delivered(
    kafka_bootstrap: str,
) -> None:
    topic = unique_topic("refusing")
    # The broker refuses records over 3000 bytes on this topic, and only there.
    await create_topic(kafka_bootstrap, topic, 3, config={"max.message.bytes": "3000"})
    settings = PublisherSettings(
        connection=KafkaConnection(bootstrap=kafka_bootstrap),
        topic=topic,
        dead_letter_topic=f"{topic}.dead-letter",
        ack_timeout=10,
    )
    metrics = RelayMetrics()
    small = [record(f"small-{i}", "ResponseComplete", i) for i in range(20)]
    # Incompressible, so that it stays over the limit once zstd has had it.
    large = record("large", "ResponseComplete", 99, {"data": os.urandom(4000).hex()})
    async with KafkaPublisher(settings, metrics) as publisher:
        await wait_until(lambda: publisher.connected, timeout=30, what="producer connected")
        await publisher.publish([*small[:10], large, *small[10:]])
    delivered = await read_topic(kafka_bootstrap, topic, 20)
    assert sorted(m.value for m in delivered) == sorted(r.value for r in small)
    [refused] = await read_topic(kafka_bootstrap, f"{topic}.dead-letter", 1)
    assert refused.value == large.value
    headers = dict(refused.headers)
    assert b"MessageSizeTooLarge" in headers["reason"]
    assert headers["cluster"] == b"c"
    assert metrics.registry.get_sample_value("relay_events_refused_by_kafka_total") == 1


async def test_records_of_an_answered_request_count_as_held_until_their_producer_lets_go(
    broker_factory: Callable[[], LocalBroker],
) -> None:
    """A hung broker: the request fails, its records stay in the abandoned producer's batches
    (counted in ``unanswered_bytes`` for the in-flight bound) until that producer is closed."""
    broker = broker_factory()
    settings = PublisherSettings(
        connection=KafkaConnection(bootstrap=broker.bootstrap),
        topic=unique_topic("hung"),
        partitions=1,
        ack_timeout=2,
    )
    metrics = RelayMetrics()
    async with KafkaPublisher(settings, metrics) as publisher:
        await wait_until(lambda: publisher.connected, timeout=30, what="producer connected")
        await publisher.publish([record("before", "ResponseComplete", 0)])
        broker.pause()
        held = [record(f"held-{i}", "ResponseComplete", i) for i in range(50)]
        with pytest.raises(KafkaUnavailable):
            await publisher.publish(held)
        assert publisher.unanswered_bytes == sum(r.size for r in held)
        gauge = metrics.registry.get_sample_value("relay_kafka_unanswered_bytes")
        assert gauge == publisher.unanswered_bytes
        # The abandoned producer fails what it holds within its close: ack timeout + 5 s.
        await wait_until(lambda: publisher.unanswered_bytes == 0, timeout=15, what="released")
        assert metrics.registry.get_sample_value("relay_kafka_unanswered_bytes") == 0
        broker.resume()


def test_the_key_and_headers_count_in_what_fits() -> None:
    settings = PublisherSettings(
        connection=KafkaConnection(), compression="none", max_message_bytes=10_000
    )
    publisher = KafkaPublisher(settings, RelayMetrics())
    value = b"v" * 5000
    assert publisher.fits(value, b"k", [("user", b"u" * 100)])
    assert not publisher.fits(value, b"k", [("user", b"u" * 1000)])
    assert not publisher.fits(value, b"k" * 1000)
