"""Fixtures shared by every test package: a real broker, topics, processes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.cluster import LocalCluster
from tests.support.kafka import LocalBroker, create_topic, unique_topic
from tests.support.net import unused_port_pair, unused_port_run
from tests.support.postgres import LocalPostgres, create_database, drop_database
from tests.support.processes import ProcessFactory
from tests.support.relay import StartRelay, relay_starter


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real broker: ``KAFKA_BOOTSTRAP``, or one this session starts."""
    given = os.environ.get("KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    broker = LocalBroker(unused_port_pair(), tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[[], LocalBroker]]:
    """Makes private brokers that a test may stop, kill and restart; stops them at teardown."""
    made: list[LocalBroker] = []

    def make() -> LocalBroker:
        broker = LocalBroker(unused_port_pair(), tmp_path / f"kafka-{len(made)}")
        broker.start()
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.stop()


@pytest.fixture(scope="module")
def cluster_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[dict[str, str]], LocalCluster]]:
    """Makes three-broker clusters (``deploy/local/kafka --brokers 3``, about 15 s) with the
    given broker settings; a module's tests may share one. Stops them at the module's end."""
    made: list[LocalCluster] = []

    def make(settings: dict[str, str]) -> LocalCluster:
        cluster = LocalCluster(
            unused_port_run(6), tmp_path_factory.mktemp("cluster"), settings=settings
        )
        made.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture
def topic() -> str:
    """A fresh topic name; the relay creates it, or a test calls ``new_topic``."""
    return unique_topic()


@pytest.fixture
async def new_topic(kafka_bootstrap: str) -> AsyncIterator[Callable[[int], Awaitable[str]]]:
    """Creates topics with a given partition count on the session broker."""

    async def make(partitions: int = 1) -> str:
        name = unique_topic()
        await create_topic(kafka_bootstrap, name, partitions)
        return name

    yield make


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ProcessFactory]:
    """Starts real relay and consumer processes; kills any still running at teardown."""
    factory = ProcessFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> Iterator[str]:
    """A superuser DSN of a real PostgreSQL server: ``POSTGRES_DSN`` (a postgresql:// URL), or a
    private cluster this session starts (about a second) and removes."""
    given = os.environ.get("POSTGRES_DSN")
    if given:
        yield given
        return
    server = LocalPostgres()
    try:
        server.init()
        server.start()
        yield server.admin_dsn
    finally:
        server.close()


@pytest.fixture
async def postgres_dsn(postgres_admin_dsn: str) -> AsyncIterator[str]:
    """A DSN (with its password) of a fresh empty database, dropped at teardown."""
    dsn = await create_database(postgres_admin_dsn)
    yield dsn
    await drop_database(postgres_admin_dsn, dsn)


@pytest.fixture
def postgres_factory() -> Iterator[Callable[[], LocalPostgres]]:
    """Makes private PostgreSQL servers that a test may stop and start; removes them after."""
    made: list[LocalPostgres] = []

    def make() -> LocalPostgres:
        server = LocalPostgres()
        made.append(server)
        server.init()
        server.start()
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture
def start_relay(
    processes: ProcessFactory, kafka_bootstrap: str, http: aiohttp.ClientSession
) -> StartRelay:
    """Starts real relay processes (``python -m relay --insecure``) with fresh topics."""
    return relay_starter(processes, kafka_bootstrap, http)
