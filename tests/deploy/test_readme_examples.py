"""The README's shell examples of "Consuming the topic", "--sink postgres" and "Detection", run
as written against real processes: a private Kafka broker fed by a real relay, a real
PostgreSQL, a real HTTP receiver standing for Falcosidekick.

Each fenced ``sh`` block of those sections runs in bash (``-euo pipefail``) from a scratch
directory holding ``.venv`` and ``deploy`` of this repository, with ``.venv/bin`` first on PATH.
What a reader fills in for their own installation is filled in for the test, and nothing else:
- the addresses the README uses for Kafka (``kafka:9092``, ``127.0.0.1:9092``) and for
  Falcosidekick (``http://falcosidekick:2801/``) name the test's broker and receiver;
- absolute paths (``/run/secrets/...``, ``/var/log/kubernetes/...``, ``/etc/audit-rules/...``)
  are under the scratch directory, where the test has put the files they name (the README's
  own rules example is ``local.yaml``);
- a variable the README exports gets the test's value where it names the reader's installation
  (the DSN); an export this test does not know fails it, so a new one is looked at.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import orjson
import pytest

from audit_common.samples import sample_events
from tests.consumers.http_receiver import Receiver
from tests.support.kafka import REPO, LocalBroker
from tests.support.net import unused_port, unused_port_pair, wait_until
from tests.support.postgres import password_of, without_password
from tests.support.processes import ProcessFactory

pytestmark = pytest.mark.integration

README = (REPO / "README.md").read_text()
ABSOLUTE_ROOTS = ("/run/secrets/", "/var/log/kubernetes/", "/etc/audit-rules/")
# The README's own example row (--sink postgres): the event it shows, posted for real.
README_EVENT = {
    "kind": "Event",
    "apiVersion": "audit.k8s.io/v1",
    "level": "Metadata",
    "auditID": "5f0c2a8e-6d4b-4f7e-9a31-2c8d7e1b4a90",
    "stage": "ResponseComplete",
    "requestURI": "/api/v1/namespaces/prod/secrets/db-creds",
    "verb": "delete",
    "user": {"username": "alice", "groups": ["system:authenticated"]},
    "sourceIPs": ["10.0.3.7"],
    "userAgent": "kubectl/v1.31.2",
    "objectRef": {
        "resource": "secrets",
        "namespace": "prod",
        "name": "db-creds",
        "apiVersion": "v1",
    },
    "responseStatus": {"metadata": {}, "code": 200},
    "requestReceivedTimestamp": "2024-06-04T17:58:49.681102Z",
    "stageTimestamp": "2024-06-04T17:58:49.696299Z",
    "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""},
}
EVENTS = [README_EVENT, *sample_events(150, cluster="prod-eu", seed=27)]


def section(heading: str) -> str:
    """The README's text from ``heading`` to the next heading of its level or above (a line
    starting with ``#`` inside a fenced block is a comment, not a heading)."""
    level = len(heading.split(" ", 1)[0])
    lines = README.splitlines(keepends=True)
    start = lines.index(heading + "\n")
    in_code = False
    for end in range(start + 1, len(lines)):
        line = lines[end]
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(rf"#{{1,{level}}} ", line):
            return "".join(lines[start:end])
    return "".join(lines[start:])


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


@dataclass
class Here:
    """What the examples' stand-ins mean in this test."""

    work: Path
    bootstrap: str
    exports: dict[str, str]
    alerts_url: str = "http://127.0.0.1:9/"

    def script(self, block: str) -> str:
        for stand_in in ("kafka:9092", "127.0.0.1:9092"):
            block = block.replace(stand_in, self.bootstrap)
        block = block.replace("http://falcosidekick:2801/", self.alerts_url)
        for root in ABSOLUTE_ROOTS:
            block = block.replace(root, f"{self.work}{root}")

        def export(match: re.Match[str]) -> str:
            name = match[1]
            assert name in self.exports, f"the README exports {name}: what is it in this test?"
            value = self.exports[name] or match[2]
            return f"export {name}={value}"

        return re.sub(r"^export (\w+)=(.*)$", export, block, flags=re.MULTILINE)

    def environ(self) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("AUDIT_CONSUMER_", "AUDIT_RELAY_", "KAFKA_BOOTSTRAP"))
        }
        env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        return env


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


async def run(
    here: Here,
    block: str,
    *,
    until: Callable[[], Awaitable[bool]] | None = None,
    timeout: float = 90,
) -> Ran:
    """Run one example; with ``until``, a long-running one: SIGTERM its process group once
    ``until`` holds, as Ctrl-C would stop it, and return how it exited."""
    process = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", here.script(block),
        cwd=here.work, env=here.environ(), start_new_session=True,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    output = asyncio.ensure_future(process.communicate())
    try:
        if until is not None:

            async def holds() -> bool:
                assert not output.done(), f"the example exited: {(await output)[1].decode()}"
                return await until()

            await wait_until(holds, timeout=timeout, what=f"example: {block[:60]!r}")
            os.killpg(process.pid, signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(asyncio.shield(output), timeout)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await output
    assert process.returncode is not None
    return Ran(process.returncode, stdout.decode(), stderr.decode())


def relay_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def kafka_with_events(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private broker (the examples use the default topic and groups) whose topic
    ``k8s-audit`` holds ``EVENTS``, posted through a real relay of cluster prod-eu."""
    directory = tmp_path_factory.mktemp("readme-examples")
    broker = LocalBroker(unused_port_pair(), directory / "kafka")
    broker.start()
    processes = ProcessFactory(directory)
    try:
        port = unused_port()
        relay = processes.start(
            "relay",
            *("--insecure", "--listen", f"127.0.0.1:{port}", "--cluster", "prod-eu"),
            *("--kafka-bootstrap", broker.bootstrap),
        )
        events = directory / "events.jsonl"
        events.write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in EVENTS))
        deadline = time.monotonic() + 30
        while not relay_ready(port):
            assert relay.popen.poll() is None, relay.stderr()
            assert time.monotonic() < deadline, "relay not ready within 30s"
            time.sleep(0.1)
        replay = subprocess.run(
            [sys.executable, str(REPO / "deploy/local/replay-corpus"), str(events),
             "--url", f"http://127.0.0.1:{port}/api/audits"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert replay.returncode == 0, replay.stderr + relay.stderr()
        yield broker.bootstrap
    finally:
        processes.close()
        broker.stop()


@pytest.fixture
def here(tmp_path: Path, kafka_with_events: str) -> Here:
    work = tmp_path / "work"
    work.mkdir()
    for name in (".venv", "deploy"):
        (work / name).symlink_to(REPO / name)
    for root in ABSOLUTE_ROOTS:
        (work / root.strip("/")).mkdir(parents=True)
    return Here(work, kafka_with_events, exports={})


async def test_consuming_the_topic(here: Here) -> None:
    [block] = fenced(section("## Consuming the topic"), "sh")
    ran = await run(here, block)
    assert ran.code == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert len(lines) == 20, lines  # --max 20
    assert all(line.split()[1] == "prod-eu" for line in lines)


async def test_the_postgres_sink_and_query(here: Here, postgres_dsn: str) -> None:
    text = section("### `--sink postgres`: the queryable audit store")
    sink_block, query_block = fenced(text, "sh")
    (here.work / "run/secrets/pg-password").write_text(f"{password_of(postgres_dsn)}\n")
    here.exports = {
        "AUDIT_CONSUMER_POSTGRES_DSN": without_password(postgres_dsn),
        "AUDIT_CONSUMER_POSTGRES_PASSWORD_FILE": "",  # as written: a path under the work dir
    }

    async def stored() -> bool:
        connection = await asyncpg.connect(postgres_dsn)
        try:
            return await connection.fetchval("SELECT count(*) FROM audit_events") == len(EVENTS)
        except asyncpg.UndefinedTableError:
            return False
        finally:
            await connection.close()

    ran = await run(here, sink_block, until=stored)
    assert ran.code == 0, ran.stderr
    assert "Traceback" not in ran.stderr

    # The query examples read the DSN and password file the sink example exported.
    exports = "\n".join(line for line in sink_block.splitlines() if line.startswith("export "))
    ran = await run(here, exports + "\n" + query_block)
    assert ran.code == 0, ran.stderr
    shown = [line[2:] for line in query_block.splitlines() if line.startswith("# ")]
    header, row = ran.stdout.splitlines()[:2]
    assert header.split() == shown[0].split()
    # The README's row, but for the auditID it shortens.
    assert row.split()[:-1] == shown[1].split()[:-1]
    assert README_EVENT["auditID"].startswith(shown[1].split()[-1].rstrip("."))
    assert '"alice"' in ran.stdout.splitlines()  # jq's answer: who touched db-creds
    service_accounts = (here.work / "sa.csv").read_text().splitlines()
    assert service_accounts[0].startswith("time,cluster,user")
    assert len(service_accounts) > 1
    assert all(",system:serviceaccount:" in line for line in service_accounts[1:])


async def test_detection(here: Here) -> None:
    text = section("## Detection")
    [rules] = fenced(text, "yaml")
    rules_test, alerts_sink = fenced(text, "sh")
    log = b"".join(orjson.dumps(event) + b"\n" for event in EVENTS)
    for path in ("audit.log", "var/log/kubernetes/audit.log"):
        (here.work / path).write_bytes(log)
    for path in ("local.yaml", "etc/audit-rules/local.yaml"):
        (here.work / path).write_text(rules)

    ran = await run(here, rules_test)
    assert ran.code == 0, ran.stderr
    assert ran.stderr.count(f"{len(EVENTS)} events read from 1 file") == 2
    assert "Secret Deleted By A Person" in ran.stderr  # the README's rule, on its event
    # What the alerts sink must deliver: the same rules on the same events, offline.
    flags = re.findall(r"--rules \S+|--min-priority \S+", alerts_sink)
    expected = await run(here, f"audit-consumer rules test {' '.join(flags)} audit.log")
    assert expected.code == 0, expected.stderr
    alerts = len(expected.stdout.splitlines())
    assert alerts > 0

    async with Receiver() as receiver:
        here.alerts_url = receiver.url

        async def delivered() -> bool:
            return len(receiver.accepted()) >= alerts

        ran = await run(here, alerts_sink, until=delivered)
        assert ran.code == 0, ran.stderr
    rules_fired = {orjson.loads(r.body)["rule"] for r in receiver.accepted()}
    assert "Secret Deleted By A Person" in rules_fired
    assert len(receiver.accepted()) == alerts  # none twice in one clean run
