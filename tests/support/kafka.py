"""A real local broker (deploy/local/kafka) and helpers to read and create topics."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import trustme
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cryptography.hazmat.primitives import serialization

REPO = Path(__file__).resolve().parents[2]
KAFKA_SCRIPT = REPO / "deploy" / "local" / "kafka"


@dataclass(frozen=True)
class SaslSslListener:
    """A second client listener of one broker, SASL_SSL with mechanism PLAIN (as Azure Event
    Hubs' Kafka endpoint): ``users`` (name: password) and a CA-signed certificate for
    127.0.0.1 made with trustme, kept in ``directory``."""

    port: int
    users: dict[str, str]
    directory: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the listener's certificate, for its clients."""
        return self.directory / "ca.pem"

    def script_args(self) -> tuple[str, ...]:
        """deploy/local/kafka's flags for this listener; writes its users file and keystore."""
        self.directory.mkdir(parents=True, exist_ok=True)
        keystore, users = self.directory / "broker.pem", self.directory / "users"
        if not keystore.exists():
            ca = trustme.CA()
            ca.cert_pem.write_to_path(str(self.ca_file))
            issued = ca.issue_cert("127.0.0.1")
            # Kafka's PEM keystore takes a PKCS#8 key only; trustme writes a traditional one.
            key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), None)
            pkcs8 = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            chain = b"".join(blob.bytes() for blob in issued.cert_chain_pems)
            keystore.write_bytes(pkcs8 + chain)
        users.write_text("".join(f"{name}={password}\n" for name, password in self.users.items()))
        users.chmod(0o600)
        return (
            "--sasl-ssl-port", str(self.port), "--sasl-users-file", str(users),
            "--tls-keystore", str(keystore),
        )  # fmt: skip


@dataclass
class LocalBroker:
    """A broker started by deploy/local/kafka; tests may stop, kill, pause and restart it.

    ``script_args`` name it to the script: by default its port and state directory (one
    broker); a member of a ``LocalCluster`` is named by the cluster's arguments and
    ``--broker node_id``. ``sasl_ssl`` adds a SASL_SSL listener at each start.
    """

    port: int
    state_dir: Path
    node_id: int = 1
    script_args: tuple[str, ...] = ()
    paused: bool = False
    sasl_ssl: SaslSslListener | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self, command: str, *extra: str) -> None:
        args = self.script_args or ("--port", str(self.port), "--state-dir", str(self.state_dir))
        run_kafka_script(command, *args, *extra)

    def start(self) -> None:
        if self.sasl_ssl is None:
            self._run("start")
        else:
            self._run("start", *self.sasl_ssl.script_args())

    def stop(self) -> None:
        """Controlled shutdown (SIGTERM): the broker hands its leaderships over first."""
        self.resume()  # a stopped (SIGSTOP) JVM would not see the SIGTERM of a controlled stop
        self._run("stop")

    def pause(self) -> None:
        """SIGSTOP the broker: connections stay open and nothing answers, as in a long GC pause,
        a frozen VM or a partition that drops packets."""
        os.kill(self._pid(), signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            os.kill(self._pid(), signal.SIGCONT)
        self.paused = False

    def running(self) -> bool:
        """Whether its pid file names a live process (not paused, not a zombie)."""
        try:
            state = Path(f"/proc/{self._pid()}/stat").read_text().split()[2]
        except (FileNotFoundError, ValueError):
            return False
        return state != "Z" and not self.paused

    def _pid(self) -> int:
        return int((self.state_dir / "kafka.pid").read_text())

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would."""
        pid = self._pid()
        os.kill(pid, signal.SIGKILL)
        self.paused = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise AssertionError(f"broker pid {pid} survived SIGKILL")


def run_kafka_script(command: str, *args: str) -> None:
    """``deploy/local/kafka COMMAND ARGS``; fails the test when it fails."""
    subprocess.run(
        [str(KAFKA_SCRIPT), command, *args], check=True, timeout=180, stdout=subprocess.DEVNULL
    )


def unique_topic(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    config: dict[str, str] | None = None,
    *,
    replication_factor: int = 1,
    assignments: dict[int, list[int]] | None = None,
) -> None:
    """Create topic ``name`` with ``config`` (topic-level settings such as max.message.bytes);
    ``assignments`` (partition: replica node ids, the first its preferred leader) instead of
    ``partitions`` and ``replication_factor`` places its replicas on chosen brokers."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if assignments is None:
            topic = NewTopic(name, partitions, replication_factor, topic_configs=config)
        else:
            topic = NewTopic(name, -1, -1, replica_assignments=assignments, topic_configs=config)
        await admin.create_topics([topic])
    finally:
        await admin.close()


async def read_topic(
    bootstrap: str, topic: str, count: int, *, timeout: float = 30.0, contract: bool = True
) -> list[ConsumerRecord]:
    """Read the first ``count`` records of ``topic`` (all partitions, from the start).

    Fails the test when fewer arrive within ``timeout``; returns exactly what arrived when more
    arrive in the same fetch, so callers can assert on the exact count. With ``contract``, also
    when a record breaks the message contract (``tests.support.contract``): off only for
    topics a test fills with broken records on purpose.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{topic}: {len(records)} of {count} records within {timeout}s"
                )
            batches = await consumer.getmany(timeout_ms=int(min(remaining, 1.0) * 1000))
            for batch in batches.values():
                records.extend(batch)
        # One more short poll: extra records (duplicates) must be visible to the caller.
        batches = await consumer.getmany(timeout_ms=300)
        for batch in batches.values():
            records.extend(batch)
    finally:
        await consumer.stop()
    if contract:
        from tests.support.contract import check_record  # imports this module

        for record in records:
            check_record(record)
    return records


async def topic_size(bootstrap: str, topic: str) -> int:
    """Total records in ``topic`` (sum of end offsets minus start offsets); 0 when it is missing."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return 0
        [description] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    tps = [TopicPartition(topic, p["partition"]) for p in description["partitions"]]
    assert tps, f"{topic} has no partitions"
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


async def committed_and_end(
    bootstrap: str, group: str, topic: str, partitions: int
) -> tuple[int, int]:
    """The group's committed offsets and the topic's end offsets, each summed over partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        committed = [await consumer.committed(tp) or 0 for tp in tps]
        return sum(committed), sum(ends.values())
    finally:
        await consumer.stop()


async def group_state(bootstrap: str, group: str) -> tuple[str, int]:
    """A consumer group's state ("Stable", "PreparingRebalance"...) and its member count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    # DescribeGroups' group: error_code, group_id, state, protocol_type, protocol, members...
    description = response.groups[0]
    return description[2], len(description[5])
