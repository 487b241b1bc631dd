"""Kafka as production runs it (issue 24): three brokers, topics with replication factor 3 and
min.insync.replicas 2, ``replica.lag.time.max.ms`` 10 s, under the re-posting load.

One cluster serves the module's scenarios in sequence (starting it takes about 15 s); each
scenario ends with every broker running and every replica in sync, and the ``cluster`` fixture
starts whatever a failed one left down. Each counts every event in Kafka and through a CSV
consumer group, asserts that nothing acknowledged is lost and when the relay may answer 503,
and adds its figures to the fault table (``tests/faults/cluster_pipeline.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import aiohttp
import pytest

from audit_common.kafka_connection import KafkaConnection
from relay.kafka.stall_probe import StallProbe
from tests.faults.cluster_pipeline import Pipeline
from tests.faults.harness import RESULTS, Relay
from tests.support.cluster import OFFSETS_TOPIC, LocalCluster
from tests.support.kafka import create_topic
from tests.support.net import wait_until
from tests.support.processes import ProcessFactory

pytestmark = pytest.mark.integration

LAG_MS = 10_000  # replica.lag.time.max.ms: a follower silent this long leaves the ISR
MIN_INSYNC = 2
ACK_TIMEOUT_S = 3  # the harness relay's --ack-timeout
SLOW_FOLLOWER_ACK_TIMEOUT_S = 25  # over 1.5 x LAG_MS, under the apiserver's 30 s
# A bound on recovery, not a timing: the apiserver drops a batch after 1.5 to 4 minutes.
RECOVERY_WITHIN_S = 60


@pytest.fixture(scope="module")
def shared_cluster(cluster_factory: Callable[[dict[str, str]], LocalCluster]) -> LocalCluster:
    return cluster_factory({"replica.lag.time.max.ms": str(LAG_MS)})


@pytest.fixture
async def cluster(shared_cluster: LocalCluster) -> AsyncIterator[LocalCluster]:
    """The module's cluster; brokers a scenario left stopped, killed or paused start again."""
    yield shared_cluster
    await asyncio.to_thread(shared_cluster.start)


MakePipeline = Callable[..., Pipeline]


@pytest.fixture
def make_pipeline(
    cluster: LocalCluster, processes: ProcessFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> MakePipeline:
    """Pipelines on the module's cluster: ``make_pipeline(scenario, spool=True)``."""

    def make(scenario: str, *, spool: bool = True, relay_args: Sequence[str] = ()) -> Pipeline:
        return Pipeline(
            scenario, cluster, processes, http, tmp_path, spool=spool, relay_args=relay_args
        )

    return make


async def recover(cluster: LocalCluster, pipeline: Pipeline, fault_end: float) -> None:
    """After the fault's end (a Unix time): the relay acknowledged again, then ``settled``."""
    await pipeline.fault_ended(fault_end, RECOVERY_WITHIN_S)
    await settled(cluster, pipeline, fault_end)


async def settled(cluster: LocalCluster, pipeline: Pipeline, fault_end: float) -> None:
    """Every replica is in sync again, and the consumer group committed after ``fault_end``."""
    await cluster.wait_in_sync([*pipeline.topics, OFFSETS_TOPIC])
    await wait_until(
        lambda: pipeline.watch.committed_since(fault_end),
        timeout=RECOVERY_WITHIN_S,
        interval=0.25,
        what="the CSV group committing again",
    )


async def finish_with_every_answer_200(pipeline: Pipeline) -> None:
    await pipeline.finish()
    # Two brokers could acknowledge throughout: with a spool the apiserver saw no error.
    assert set(pipeline.tally.answers) == {"200"}, pipeline.tally.answers


async def ready(relay: Relay, http: aiohttp.ClientSession) -> bool:
    async with http.get(f"{relay.base}/readyz") as response:
        return response.status == 200


@pytest.mark.timeout(240)
async def test_leader_of_the_busiest_partitions_sigkilled_and_restarted_10_s_later(
    cluster: LocalCluster, make_pipeline: MakePipeline
) -> None:
    pipeline = make_pipeline("leader SIGKILL 10 s")
    await pipeline.start()
    await asyncio.sleep(3)
    leader = cluster.broker(await cluster.busiest_leader(pipeline.relay.topic))
    leader.kill()
    await asyncio.sleep(10)
    await asyncio.to_thread(leader.start)
    await recover(cluster, pipeline, time.time())
    await finish_with_every_answer_200(pipeline)


@pytest.mark.timeout(420)
async def test_rolling_restart_of_every_broker_twice_with_controlled_shutdown(
    cluster: LocalCluster, make_pipeline: MakePipeline
) -> None:
    """What an upgrade does: one broker at a time, the next once every replica is in sync."""
    pipeline = make_pipeline("rolling restart x2")
    await pipeline.start()
    for _ in range(2):
        for broker in cluster.brokers:
            await asyncio.sleep(1)  # steady load with all three up
            await asyncio.to_thread(broker.stop)
            await asyncio.to_thread(broker.start)
            await recover(cluster, pipeline, time.time())
    await finish_with_every_answer_200(pipeline)


@pytest.mark.timeout(60)
async def test_the_stall_probe_is_answered_while_one_broker_is_frozen(
    cluster: LocalCluster,
) -> None:
    """A frozen broker keeps its connections open and answers nothing: the probe asks every
    broker at once, so it never takes that for a cluster that does not answer (asked one after
    another, a round that began with the frozen one missed: 1 in 3 here). The first probe
    comes during the freeze, of the first bootstrap address: the probe learned the brokers in
    the background at start (bootstrapping within the probe, every round missed)."""
    connection = KafkaConnection(bootstrap=cluster.bootstrap)
    frozen = cluster.brokers[0]
    async with StallProbe(connection, timeout=0.5, misses=1, interval=0.0) as probe:
        client = probe._client  # the brokers it knows: no probe may ask before the freeze
        assert client is not None
        await wait_until(lambda: len(client.cluster.brokers()) == 3, timeout=20, what="brokers")
        frozen.pause()
        try:
            verdicts = [await probe.unreachable() for _ in range(12)]
        finally:
            frozen.resume()
    assert verdicts == [None] * 12


@pytest.mark.timeout(240)
async def test_one_follower_frozen_for_longer_than_the_replica_lag_then_thawed(
    cluster: LocalCluster, make_pipeline: MakePipeline
) -> None:
    """SIGSTOP of a broker that leads nothing the relay or the group uses: acks=all waits
    for it until the leaders drop it from the ISR (after ``replica.lag.time.max.ms``)."""
    # An ack timeout above the time the leaders take to drop the follower from the ISR (they
    # look every replica.lag.time.max.ms / 2): slow, not down, so nothing is given up or resent.
    pipeline = make_pipeline(
        "follower frozen 20 s", relay_args=("--ack-timeout", str(SLOW_FOLLOWER_ACK_TIMEOUT_S))
    )
    coordinator = await cluster.group_coordinator()
    frozen = next(b for b in reversed(cluster.brokers) if b.node_id != coordinator)
    leaders = [b.node_id for b in cluster.brokers if b is not frozen]
    # Each partition led by one of the two others, the frozen broker always a follower.
    assignments = {p: [leaders[p % 2], leaders[(p + 1) % 2], frozen.node_id] for p in range(3)}
    for topic in pipeline.topics:
        config = {"min.insync.replicas": str(MIN_INSYNC)}
        await create_topic(cluster.bootstrap, topic, config=config, assignments=assignments)
    await pipeline.start()
    await asyncio.sleep(3)
    frozen.pause()
    await asyncio.sleep(2 * LAG_MS / 1000)
    frozen.resume()
    await recover(cluster, pipeline, time.time())
    await finish_with_every_answer_200(pipeline)
    assert pipeline.metrics["relay_kafka_producer_restarts_total"] == 0
    assert pipeline.metrics["relay_records_resent_total"] == 0
    assert pipeline.metrics["relay_events_spooled_total"] == 0


@pytest.mark.timeout(300)
async def test_two_brokers_down_the_relay_spools_or_refuses_and_recovers_when_one_returns(
    cluster: LocalCluster, make_pipeline: MakePipeline, http: aiohttp.ClientSession
) -> None:
    """Below min.insync.replicas nothing can be acknowledged: the relay with a spool takes
    every request on disk (ready), the one without answers 503 (not ready); both deliver
    again once a second broker is back."""
    spooled = make_pipeline("two down, spool")
    unspooled = make_pipeline("two down, no spool", spool=False)
    pipelines = (spooled, unspooled)
    topics = [topic for p in pipelines for topic in p.topics]
    await asyncio.gather(*(p.start() for p in pipelines))
    await asyncio.sleep(3)
    first = cluster.broker(await cluster.busiest_leader(spooled.relay.topic))
    second = next(b for b in cluster.brokers if b is not first)
    first.kill()
    second.kill()
    down = time.time()

    async def unavailable() -> bool:
        spooling = await spooled.relay.metrics(http)
        return (
            not await ready(unspooled.relay, http)
            and spooling["relay_kafka_up"] == 0
            and spooling["relay_spool_events"] > 0
        )

    await wait_until(unavailable, timeout=30, interval=0.2, what="the relays seeing no acks")
    assert await ready(spooled.relay, http), "with a spool the relay still takes requests"
    # Until 10 s after the kill: how often the relay without a spool says it is not ready (it
    # connects a new producer between attempts, and is ready while one is in place).
    readiness = []
    while time.time() < down + 10:
        readiness.append(await ready(unspooled.relay, http))
        await asyncio.sleep(0.25)
    RESULTS.append(
        f"| two down, no spool: /readyz 503 in {readiness.count(False)} of {len(readiness)} "
        "samples while two brokers were down |"
    )
    await asyncio.to_thread(first.start)
    back = time.time()
    writable_s = await cluster.wait_writable(topics, MIN_INSYNC, RECOVERY_WITHIN_S)
    await asyncio.gather(*(p.fault_ended(back, RECOVERY_WITHIN_S) for p in pipelines))
    await wait_until(lambda: ready(unspooled.relay, http), timeout=30, what="/readyz 200")
    await asyncio.to_thread(second.start)
    for pipeline in pipelines:
        await settled(cluster, pipeline, back)
    await asyncio.gather(finish_with_every_answer_200(spooled), unspooled.finish())
    # 503s only while fewer than min.insync.replicas brokers could acknowledge: from the kill
    # until every partition was writable again, plus one ack timeout for requests in flight.
    writable = back + writable_s
    late = [at - writable for at in unspooled.tally.refused_at if at > writable + ACK_TIMEOUT_S]
    assert not late, f"{len(late)} answers not 200 up to {max(late):.1f}s after Kafka was back"
    early = [at for at in unspooled.tally.refused_at if at < down]
    assert not early, f"{len(early)} answers not 200 before the brokers went down"
    assert unspooled.tally.refused_at, "the relay without a spool refused while nothing acked"
