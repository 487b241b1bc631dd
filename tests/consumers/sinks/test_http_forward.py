"""The http sink in-process against a real local HTTP(S) server."""

from __future__ import annotations

import base64
import gzip
import ssl
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme

from audit_common.errors import ConfigError, SinkError
from consumers.events import decode
from consumers.settings import build_settings
from consumers.sinks.base import BatchRefused, EventsRefused
from consumers.sinks.http_forward import HttpForwardSink, retry_after_seconds
from tests.consumers.http_receiver import Answer, Receiver
from tests.consumers.sinks.test_postgres import consumed
from tests.support.corpus import corpus_events
from tests.support.net import unused_port


def http_sink(url: str, *flags: str) -> HttpForwardSink:
    argv = ["--sink", "http", "--http-url", url, "--retry-backoff", "0.05", *flags]
    _, sink, _ = build_settings(argv, {})
    assert isinstance(sink, HttpForwardSink)
    return sink


def secret_file(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n")
    return str(path)


def as_sent(event: dict[str, Any], cluster: str = "prod-eu") -> dict[str, Any]:
    """The document of ``event``: the audit.log line the relay published, plus the cluster."""
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", **event, "cluster": cluster}


async def send(sink: HttpForwardSink, events: list[dict[str, Any]]) -> None:
    await sink.write(consumed(events))
    await sink.flush()


async def test_ndjson_gzip_with_a_bearer_token_from_a_file(tmp_path: Path) -> None:
    token = secret_file(tmp_path, "token", "s3cr3t-token")
    events = corpus_events()
    async with Receiver() as receiver:
        sink = http_sink(receiver.url, "--http-gzip", "--http-token-file", token)
        async with sink:
            await send(sink, events)
    [request] = receiver.requests
    assert request.headers["Content-Type"] == "application/x-ndjson"
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["Authorization"] == "Bearer s3cr3t-token"
    assert gzip.decompress(request.raw) == request.body != request.raw
    assert request.lines() == [as_sent(e) for e in events]
    assert "s3cr3t-token" not in repr(sink.settings)


async def test_a_json_array_with_basic_authentication(tmp_path: Path) -> None:
    password = secret_file(tmp_path, "password", "pa:ss")
    events = corpus_events()[:5]
    async with Receiver() as receiver:
        flags = ("--http-format", "json-array", "--http-basic-user", "audit")
        async with http_sink(receiver.url, *flags, "--http-basic-password-file", password) as sink:
            await send(sink, events)
    [request] = receiver.requests
    assert request.headers["Content-Type"] == "application/json"
    assert "Content-Encoding" not in request.headers
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"audit:pa:ss").decode()
    assert orjson.loads(request.body) == [as_sent(e) for e in events]


async def test_elasticsearch_bulk_creates_each_document_once(tmp_path: Path) -> None:
    events = corpus_events()[:6]
    duplicate = Answer(
        200,
        body=orjson.dumps(
            {"errors": True, "items": [{"create": {"status": 409, "error": {}}}] * 6}
        ),
    )
    async with Receiver([Answer(200, body=b'{"errors":false,"items":[]}'), duplicate]) as receiver:
        sink = http_sink(receiver.url, "--http-format", "elasticsearch", "--http-index", "audit")
        async with sink:
            await send(sink, events)
            await send(sink, events)  # redelivered: every document exists (409), no error
    first, second = receiver.requests
    assert first.headers["Content-Type"] == "application/x-ndjson"
    assert first.body == second.body
    lines = first.lines()
    actions, sources = lines[::2], lines[1::2]
    assert [a["create"]["_index"] for a in actions] == ["audit"] * 6
    assert len({a["create"]["_id"] for a in actions}) == 6
    assert sources == [{**as_sent(e), "@timestamp": e["stageTimestamp"]} for e in events]


async def test_elasticsearch_documents_refused_for_now_in_a_2xx_fail_the_flush() -> None:
    items = [{"create": {"status": s, "error": {"type": f"e{s}"}}} for s in (201, 429, 503)]
    answer = Answer(200, body=orjson.dumps({"errors": True, "items": items}))
    async with (
        Receiver([answer]) as receiver,
        http_sink(receiver.url, "--http-format", "elasticsearch") as sink,
    ):
        with pytest.raises(SinkError, match="_bulk refused 2 documents for now"):
            await send(sink, corpus_events()[:3])


async def test_elasticsearch_documents_refused_for_good_are_named_the_rest_written() -> None:
    items = [{"create": {"status": 201}}, {"create": {"status": 400, "error": {"type": "mapper"}}}]
    items.append({"create": {"status": 409}})  # sent before: written
    answer = Answer(200, body=orjson.dumps({"errors": True, "items": items}))
    events = consumed(corpus_events()[:3])
    async with (
        Receiver([answer]) as receiver,
        http_sink(receiver.url, "--http-format", "elasticsearch") as sink,
    ):
        await sink.write(events)
        with pytest.raises(EventsRefused) as refused:
            await sink.flush()
    [(event, reason)] = refused.value.refused
    assert event is events[1]
    assert "400" in reason and "mapper" in reason


async def test_splunk_hec_events_carry_time_sourcetype_index_and_cluster(tmp_path: Path) -> None:
    token = secret_file(tmp_path, "hec", "0000-hec-token")
    events = corpus_events()[:4]
    async with Receiver() as receiver:
        flags = ("--http-format", "splunk-hec", "--http-token-file", token)
        async with http_sink(receiver.url, *flags, "--http-index", "k8s") as sink:
            await send(sink, events)
    [request] = receiver.requests
    assert request.headers["Authorization"] == "Splunk 0000-hec-token"
    assert request.lines() == [
        {
            "source": "kube-audit-relay",
            "sourcetype": "kube:apiserver:audit",
            "event": as_sent(e),
            "time": round(datetime.fromisoformat(e["stageTimestamp"]).timestamp(), 6),
            "index": "k8s",
            "fields": {"cluster": "prod-eu"},
        }
        for e in events
    ]


async def test_a_503_with_retry_after_delays_the_next_post() -> None:
    script = [Answer(503, {"Retry-After": "2"}, b"busy")]
    async with Receiver(script) as receiver, http_sink(receiver.url) as sink:
        with pytest.raises(SinkError, match="answered 503: busy") as raised:
            await send(sink, corpus_events()[:2])
        assert raised.value.retriable
        await send(sink, corpus_events()[:2])  # what the runner does next
    first, second = receiver.requests
    assert second.at - first.at >= 1.9
    assert second.lines() == first.lines()


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (Answer(429, {"Retry-After": "0"}), SinkError, "answered 429"),
        (Answer(500), SinkError, "answered 500"),
        (Answer(401, body=b"bad token"), ConfigError, "answered 401: bad token"),
        (Answer(413), BatchRefused, "answered 413"),
        (Answer(400, body=b"bad event"), BatchRefused, "answered 400: bad event"),
        (Answer(302, {"Location": "/elsewhere"}), ConfigError, "answered 302"),
    ],
)
async def test_statuses_are_retried_or_stop_the_consumer(
    answer: Answer, error: type[Exception], message: str
) -> None:
    async with Receiver([answer]) as receiver, http_sink(receiver.url) as sink:
        with pytest.raises(error, match=message):
            await send(sink, corpus_events()[:1])
        if error is SinkError:
            await send(sink, corpus_events()[:1])
    assert len(receiver.accepted()) == (1 if error is SinkError else 0)


async def test_a_server_that_is_not_there_is_retried_without_leaking_the_url_secret() -> None:
    url = f"http://user:hunter2@127.0.0.1:{unused_port()}/ingest?token=t0k3n"
    async with http_sink(url) as sink:
        with pytest.raises(SinkError, match=r"cannot POST to http://127\.0\.0\.1:") as raised:
            await send(sink, corpus_events()[:1])
    for shown in (str(raised.value), repr(sink.settings)):
        assert "hunter2" not in shown and "t0k3n" not in shown


def test_retry_after_is_seconds_or_an_http_date() -> None:
    now = time.time()
    assert retry_after_seconds("7", now) == 7
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 30))
    assert 28 <= (retry_after_seconds(date, now) or 0) <= 31
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


async def test_https_with_a_private_ca_and_a_client_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("audit-consumer")
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert_file))
    client.private_key_pem.write_to_path(str(key_file))
    async with Receiver(ssl_context=server_context) as receiver:
        flags = ("--http-ca-file", str(ca_file))
        client_flags = ("--http-cert-file", str(cert_file), "--http-key-file", str(key_file))
        async with http_sink(receiver.url, *flags, *client_flags) as sink:
            await send(sink, corpus_events()[:2])
        async with http_sink(receiver.url) as untrusting:
            with pytest.raises(ConfigError, match="certificate refused"):
                await send(untrusting, corpus_events()[:2])
    assert len(receiver.accepted()) == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "--http-url"),
        (["--http-url", "ftp://x/"], "http:// or https://"),
        (["--http-url", "http://x/", "--http-basic-user", "u"], "--http-basic-password-file"),
        (["--http-url", "http://x/", "--http-cert-file", "c"], "go together"),
        (["--http-url", "http://x/", "--http-token-file", "/nonexistent"], "cannot read"),
    ],
)
def test_bad_flags_are_configuration_errors(flags: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_settings(["--sink", "http", *flags], {})


@pytest.mark.parametrize("body_format", ["ndjson", "json-array", "elasticsearch", "splunk-hec"])
async def test_every_format_forwards_the_event_bytes_as_received(body_format: str) -> None:
    # Valid JSON that orjson refuses or would rewrite: a lone surrogate, a number beyond a
    # double, escapes it would write as characters.
    [good] = consumed(corpus_events()[:1])
    patch = b'{"a":"\\ud800","n":1e400,"e":"\\u00e9\\/","x":1E+2}'
    raw = good.raw[:-1] + b',"requestObject":' + patch + b"}"
    event = decode(raw, [("cluster", b"prod-eu")], topic="t", partition=0, offset=0)
    async with Receiver() as receiver:
        sink = http_sink(receiver.url, "--http-format", body_format)
        async with sink:
            await sink.write([event])
            await sink.flush()
    [request] = receiver.requests
    assert raw[:-1] + b',"cluster":"prod-eu"' in request.body
