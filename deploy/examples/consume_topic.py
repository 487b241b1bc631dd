#!/usr/bin/env python3
"""A downstream consumer of the audit topic, reading it as the message contract says.

usage: consume_topic.py [--bootstrap HOST:PORT] [--topic k8s-audit] [--group NAME] [--max N]

Prints one line per audit event (time, cluster, user, verb, resource) and commits after each
batch: at least once, so an event may be read twice after a restart. Delivery upstream is at
least once too: a repeat is the same value byte for byte, so it is recognised by a digest of
the value; a distinct event may share auditID, stage and stageTimestamp with another.
Needs only aiokafka (pip install aiokafka).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from collections import OrderedDict

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

SCHEMA_VERSION = "1"
RECENT = 100_000  # digests remembered, to drop repeats that arrive close together


async def consume(args: argparse.Namespace) -> None:
    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    recent: OrderedDict[bytes, None] = OrderedDict()
    printed = 0
    try:
        while args.max is None or printed < args.max:
            batches = await consumer.getmany(timeout_ms=1000)
            handled: dict[TopicPartition, int] = {}  # next offset to read, per partition
            for partition, records in batches.items():
                for record in records:
                    if args.max is not None and printed >= args.max:
                        break  # the rest is read again by the group's next run
                    if show(record, recent):
                        printed += 1
                    handled[partition] = record.offset + 1
            if handled:
                await consumer.commit(handled)  # after the records are handled: at least once
    finally:
        await consumer.stop()


def show(record: ConsumerRecord[bytes, bytes], recent: OrderedDict[bytes, None]) -> bool:
    """Print one event; False for a record skipped (another schema, or a repeat)."""
    headers = {name: value.decode() for name, value in record.headers}
    if headers.get("schema-version") != SCHEMA_VERSION:
        print(f"skipping a record of schema {headers.get('schema-version')}")
        return False
    digest = hashlib.sha256(record.value).digest()
    if digest in recent:
        return False  # a repeat of an event already read
    recent[digest] = None
    if len(recent) > RECENT:
        recent.popitem(last=False)
    event = json.loads(record.value)  # the standard library reads any JSON
    resource = (event.get("objectRef") or {}).get("resource", "-")
    user = headers.get("user", "-")
    print(
        f"{event['stageTimestamp']} {headers['cluster']} {user} "
        f"{event['verb']} {resource} {event['requestURI']}",
        flush=True,
    )
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka (127.0.0.1:9092)")
    parser.add_argument("--topic", default="k8s-audit", help="the events topic (k8s-audit)")
    parser.add_argument("--group", default="example-audit-reader", help="consumer group")
    parser.add_argument(
        "--max", type=int, help="stop after printing this many events (and commit no further)"
    )
    asyncio.run(consume(parser.parse_args()))


if __name__ == "__main__":
    main()
