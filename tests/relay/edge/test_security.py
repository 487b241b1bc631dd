"""Who may post, against a real relay process over real TLS, and what reaches Kafka.

Certificates are made by trustme; the client is aiohttp presenting them, as the apiserver would.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import hmac
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import trustme

from tests.relay.events.test_redact import (
    ENCODED,
    PLAIN,
    SECRET_KINDS,
    assert_no_secret,
    at_request_level,
    secret_event,
)
from tests.support.events import event_list, logged
from tests.support.kafka import read_topic, topic_size, unique_topic
from tests.support.net import unused_port, wait_until
from tests.support.processes import Process, ProcessFactory

pytestmark = pytest.mark.integration

TOKEN_A = "token-of-cluster-a-0123456789"
TOKEN_B = "token-of-cluster-b-9876543210"
TOKEN_C = "token-of-cluster-a-rotated-555"
HMAC_KEY = "0123456789abcdef" * 4


@dataclass
class Pki:
    directory: Path
    server_ca: trustme.CA
    client_ca: trustme.CA

    def client(self, common_name: str | None = "kube-apiserver", **options: Any) -> ssl.SSLContext:
        """A client context trusting the relay; with a certificate of ``client_ca`` if named."""
        context = ssl.create_default_context()
        self.server_ca.configure_trust(context)
        if common_name is not None:
            issuer = options.pop("issuer", self.client_ca)
            issuer.issue_cert(common_name, common_name=common_name, **options).configure_cert(
                context
            )
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    leaf = server_ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    client_ca.cert_pem.write_to_path(str(tmp_path / "clients.pem"))
    (tmp_path / "hmac.key").write_text(HMAC_KEY + "\n")
    return Pki(tmp_path, server_ca, client_ca)


@dataclass
class SecureRelay:
    process: Process
    base: str
    url: str
    topic: str
    dead_letter_topic: str


StartSecure = Callable[..., Awaitable[SecureRelay]]


@pytest.fixture
def start_secure(processes: ProcessFactory, kafka_bootstrap: str, pki: Pki) -> StartSecure:
    """Starts ``python -m relay`` with TLS and the given flags; waits until /readyz answers."""

    async def start(*args: str) -> SecureRelay:
        port = unused_port()
        topic = unique_topic("secure")
        process = processes.start(
            "relay",
            "--listen", f"127.0.0.1:{port}",
            "--kafka-bootstrap", kafka_bootstrap,
            "--topic", topic,
            "--dead-letter-topic", f"{topic}.dead-letter",
            "--partitions", "1",
            "--tls-cert", str(pki.directory / "server.crt"),
            "--tls-key", str(pki.directory / "server.key"),
            "--redact-hmac-key-file", str(pki.directory / "hmac.key"),
            *args,
        )  # fmt: skip
        base = f"https://127.0.0.1:{port}"
        probe = pki.client(None)  # probes present no certificate and no token

        async def ready() -> bool:
            assert process.popen.poll() is None, f"relay exited:\n{process.stderr()}"
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{base}/readyz", ssl=probe) as response,
                ):
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(ready, timeout=30, what="relay /readyz over https")
        return SecureRelay(process, base, f"{base}/api/audits", topic, f"{topic}.dead-letter")

    return start


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # A fresh connection per request: each test case presents its own certificate.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as client:
        yield client


def secret_events(count: int = 1) -> list[dict[str, Any]]:
    events = []
    for index in range(count):
        event = at_request_level(secret_event(SECRET_KINDS[index % len(SECRET_KINDS)]))
        event["auditID"] = f"{event['auditID']}-{index}"
        events.append(event)
    return events


async def post(
    session: aiohttp.ClientSession,
    relay: SecureRelay,
    context: ssl.SSLContext,
    body: bytes,
    token: str | None = None,
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with session.post(
        f"{relay.url}?timeout=30s", data=body, headers=headers, ssl=context
    ) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def metric(session: aiohttp.ClientSession, relay: SecureRelay, pki: Pki, name: str) -> str:
    async with session.get(f"{relay.base}/metrics", ssl=pki.client(None)) as response:
        text = await response.text()
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


async def test_client_certificates(
    start_secure: StartSecure, session: aiohttp.ClientSession, pki: Pki, kafka_bootstrap: str
) -> None:
    relay = await start_secure(
        "--client-ca", str(pki.directory / "clients.pem"), "--allowed-client-cn", "kube-apiserver"
    )
    body = event_list(secret_events(2))
    assert await post(session, relay, pki.client(), body) == (
        200,
        {"accepted": 2, "deadLettered": 0},
    )
    refused = {"error": "unauthorized"}
    assert await post(session, relay, pki.client(None), body) == (401, refused)
    assert await post(session, relay, pki.client("someone-else"), body) == (401, refused)
    yesterday = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    handshake_refused = {
        "wrong CA": pki.client(issuer=trustme.CA()),
        "expired": pki.client(
            not_before=yesterday - datetime.timedelta(days=30), not_after=yesterday
        ),
    }
    for case, context in handshake_refused.items():
        with pytest.raises(aiohttp.ClientError):
            status = await post(session, relay, context, body)
            pytest.fail(f"{case}: answered {status}")
    assert relay.process.popen.poll() is None
    records = await read_topic(kafka_bootstrap, relay.topic, 2)
    assert len(records) == 2
    assert await topic_size(kafka_bootstrap, relay.topic) == 2
    failures = await metric(session, relay, pki, "relay_auth_failures_total")
    assert 'reason="no client certificate"} 1.0' in failures
    assert 'reason="client certificate common name not allowed"} 1.0' in failures


def write_tokens(path: Path, text: str) -> None:
    """Replace the file at once, as a rotated Kubernetes Secret volume does."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


async def test_tokens_stamp_clusters_and_rotate_while_running(
    start_secure: StartSecure, session: aiohttp.ClientSession, pki: Pki, kafka_bootstrap: str
) -> None:
    tokens = pki.directory / "tokens.csv"
    write_tokens(tokens, f"# cluster tokens\n{TOKEN_A},cluster-a\n{TOKEN_B},cluster-b\n")
    relay = await start_secure("--token-file", str(tokens))
    context = pki.client(None)
    [event_a, event_b, event_c] = secret_events(3)
    assert (await post(session, relay, context, event_list([event_a]), TOKEN_A))[0] == 200
    assert (await post(session, relay, context, event_list([event_b]), TOKEN_B))[0] == 200
    for wrong in (None, TOKEN_A[:-1], TOKEN_A + "0", TOKEN_C):
        assert await post(session, relay, context, event_list([event_c]), wrong) == (
            401,
            {"error": "unauthorized"},
        )
    write_tokens(tokens, f"{TOKEN_C},cluster-a\n{TOKEN_B},cluster-b\n")
    # The file is checked on every request: the very next one sees the rotation.
    assert (await post(session, relay, context, event_list([event_c]), TOKEN_A))[0] == 401
    assert (await post(session, relay, context, event_list([event_c]), TOKEN_C))[0] == 200
    assert (await post(session, relay, context, event_list([event_b]), TOKEN_B))[0] == 200
    records = await read_topic(kafka_bootstrap, relay.topic, 4)
    clusters = {
        (orjson.loads(record.value)["auditID"], dict(record.headers)["cluster"].decode())
        for record in records
    }
    assert clusters == {
        (event_a["auditID"], "cluster-a"),
        (event_b["auditID"], "cluster-b"),
        (event_c["auditID"], "cluster-a"),
    }
    assert len(records) == 4  # event_b twice
    assert "re-read" in relay.process.stderr()
    assert TOKEN_A not in relay.process.stderr() and TOKEN_C not in relay.process.stderr()


async def test_start_refuses_without_tls_or_authentication(
    processes: ProcessFactory, pki: Pki
) -> None:
    tls = [
        "--tls-cert",
        str(pki.directory / "server.crt"),
        "--tls-key",
        str(pki.directory / "server.key"),
    ]
    bad = pki.directory / "bad-tokens.csv"
    bad.write_text(f"{TOKEN_A},a\nno-comma-here-0123456789\n")
    short_key = pki.directory / "short.key"
    short_key.write_text("short\n")
    with_ca = [*tls, "--client-ca", str(pki.directory / "clients.pem")]
    cases = {
        "no TLS, no auth": ([], "pass --insecure"),
        "TLS without client authentication": (tls, "pass --insecure"),
        "bad token file": ([*tls, "--token-file", str(bad)], "bad-tokens.csv:2: expected"),
        "short HMAC key": ([*with_ca, "--redact-hmac-key-file", str(short_key)], "at least 32"),
        "client CA without TLS": (["--client-ca", str(pki.directory / "clients.pem")], "needs"),
    }
    for case, (args, message) in cases.items():
        process = processes.start("relay", "--listen", f"127.0.0.1:{unused_port()}", *args)
        assert process.wait(30) == 2, case
        assert message in process.stderr(), (case, process.stderr())
        assert "Traceback" not in process.stderr()
        assert TOKEN_A not in process.stderr()


async def test_insecure_warns_at_start(processes: ProcessFactory, kafka_bootstrap: str) -> None:
    port = unused_port()
    process = processes.start(
        "relay", "--insecure", "--listen", f"127.0.0.1:{port}",
        "--kafka-bootstrap", kafka_bootstrap, "--topic", unique_topic(),
    )  # fmt: skip

    def warned() -> bool:
        assert process.popen.poll() is None, process.stderr()
        return "plain HTTP without client authentication" in process.stderr()

    await wait_until(warned, timeout=30, what="the --insecure warning")


def hmac_marker(value: str) -> str:
    digest = hmac.new(HMAC_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()
    return f"redacted:hmac-sha256:{digest}"


async def test_secret_bearing_events_are_redacted_before_kafka(
    start_secure: StartSecure, session: aiohttp.ClientSession, pki: Pki, kafka_bootstrap: str
) -> None:
    relay = await start_secure(
        "--client-ca", str(pki.directory / "clients.pem"), "--redact-resource", "configmaps"
    )
    secrets = [at_request_level(secret_event(kind)) for kind in SECRET_KINDS]
    configmaps = logged("configmap with credentials")
    [token_request] = logged(
        "token request", response={"kind": "TokenRequest", "status": {"token": PLAIN["token"]}}
    )
    patch = copy.deepcopy(secret_event("secret created"))
    patch |= {"verb": "patch", "level": "Request", "auditID": "patch-1"}
    patch["requestObject"] = [
        {"op": "replace", "path": "/data/password", "value": ENCODED["password"]}
    ]
    broken = at_request_level(secret_event("secret created"))
    del broken["stage"]  # dead-lettered, and redacted all the same
    events = [*secrets, *configmaps, token_request, patch]
    status, answer = await post(session, relay, pki.client(), event_list([*events, broken]))
    assert (status, answer) == (200, {"accepted": len(events), "deadLettered": 1})
    records = await read_topic(kafka_bootstrap, relay.topic, len(events))
    assert len(records) == len(events)
    [dead] = await read_topic(kafka_bootstrap, relay.dead_letter_topic, 1)
    [listed] = orjson.loads(dead.value)["listed"]  # the request's one listing of invalid items
    for value_bytes in [*(record.value for record in records), listed["item"].encode()]:
        value = orjson.loads(value_bytes)
        assert_no_secret(value)
        assert b"MY-KEY" not in value_bytes
        assert value["annotations"]["audit-relay/redacted"] == "true"
    by_id = {
        orjson.loads(record.value)["auditID"]: orjson.loads(record.value) for record in records
    }
    secret = by_id[secrets[0]["auditID"]]
    assert secret["responseObject"]["data"]["password"] == hmac_marker(ENCODED["password"])
    assert by_id["patch-1"]["requestObject"][0]["value"] == hmac_marker(ENCODED["password"])
    redacted = await metric(session, relay, pki, "relay_events_redacted_total")
    assert redacted.endswith(f" {float(len(events) + 1)}")
