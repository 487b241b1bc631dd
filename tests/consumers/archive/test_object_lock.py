"""``--archive-retain-days`` on a server with Object Lock (versitygw from deploy/local/s3): the
objects the consumer writes cannot be deleted; one written without retention can."""

from __future__ import annotations

import signal
from typing import Any

import obstore
import pytest
from obstore.store import S3Store

from consumers.archive.reading import Range, find_objects
from tests.consumers.archive.conftest import Archive
from tests.consumers.conftest import StartConsumer
from tests.consumers.messages import produce_events, with_fresh_ids
from tests.support.kafka import committed_and_end
from tests.support.net import wait_until
from tests.support.processes import wait_for_exit_or_fail


async def test_objects_written_with_a_retention_cannot_be_deleted(
    new_topic: Any, kafka_bootstrap: str, start_consumer: StartConsumer, private_archive: Any
) -> None:
    archive: Archive = private_archive("versitygw")
    topic = await new_topic(1)
    await produce_events(kafka_bootstrap, topic, with_fresh_ids(50))
    consumer = start_consumer(
        "--sink", "archive", "--topic", topic, "--archive-url", archive.url, *archive.flags,
        "--archive-retain-days", "1", "--archive-retain-mode", "governance",
        "--archive-max-seconds", "1",
        group="locked", env=archive.env,
    )  # fmt: skip

    async def all_committed() -> bool:
        return await committed_and_end(kafka_bootstrap, "locked", topic, 1) == (50, 50)

    await wait_until(all_committed, timeout=30, what="every offset committed")
    assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 30) == 0
    store = archive.store()
    (key,) = await find_objects(store, Range())
    raw = S3Store.from_url(
        archive.url, endpoint=archive.server.endpoint, client_options={"allow_http": True}
    )
    with pytest.raises(Exception, match="object lock"):
        await obstore.delete_async(raw, key.path)
    await store.put("control.txt", b"no retention", {})
    await obstore.delete_async(raw, "control.txt")
