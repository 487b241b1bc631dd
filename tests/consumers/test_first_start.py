"""A consumer's first start against a new broker, as an operator's first run meets it: no ERROR
for the states that pass by themselves (the group coordinator being elected, a topic being
created), and the alerts consumer creating its alerts topic as the relay creates its own."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable

from aiokafka.admin import AIOKafkaAdminClient

from audit_common.samples import sample_events
from tests.consumers.messages import produce_events
from tests.support.kafka import LocalBroker, committed_and_end, create_topic
from tests.support.net import wait_until
from tests.support.processes import ProcessFactory, wait_for_exit_or_fail


async def test_first_start_on_a_new_broker_logs_no_error_and_creates_the_alerts_topic(
    broker_factory: Callable[[], LocalBroker], processes: ProcessFactory
) -> None:
    broker = broker_factory()
    bootstrap = broker.bootstrap
    await create_topic(bootstrap, "k8s-audit", 3)
    events = sample_events(30)
    for event in events:
        event["auditID"] = str(uuid.uuid4())
    await produce_events(bootstrap, "k8s-audit", events)
    consumer = processes.start(
        "consumers", "--sink", "alerts", "--kafka-bootstrap", bootstrap, "--group", "alerts"
    )

    # The consumer is the first to ask for a group coordinator (the offsets topic is created
    # then): nothing else may ask before it has joined.
    await wait_until(
        lambda: "partitions assigned" in consumer.stderr(), timeout=90, what="the group joined"
    )

    async def committed() -> bool:
        assert consumer.popen.poll() is None, consumer.stderr()[-3000:]
        return await committed_and_end(bootstrap, "alerts", "k8s-audit", 3) == (30, 30)

    await wait_until(committed, timeout=90, interval=0.5, what="the first events committed")
    assert wait_for_exit_or_fail(consumer, signal.SIGTERM, 20) == 0
    errors = [line for line in consumer.stderr().splitlines() if " ERROR " in line]
    assert errors == []
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics(["k8s-audit.alerts"])
    finally:
        await admin.close()
    assert len(described["partitions"]) == 3  # --alerts-topic-partitions, not the broker's 1
