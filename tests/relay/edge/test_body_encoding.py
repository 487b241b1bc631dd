"""Content-Encoding of the webhook body through a real relay process: what decodes is
delivered, and every other body gets the JSON answer the README lists, with no traceback logged."""

from __future__ import annotations

import gzip
import zlib

import aiohttp
import orjson
import pytest

from audit_common.errors import PayloadTooLarge
from audit_common.samples import sample_events
from relay.edge.body import BodyDecoder
from tests.support.kafka import read_topic, topic_size
from tests.support.relay import RunningRelay, StartRelay

pytestmark = pytest.mark.integration

EVENTS = sample_events(5, cluster="staging", seed=27)
BODY = orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": EVENTS})


async def post(
    http: aiohttp.ClientSession, relay: RunningRelay, body: bytes, encoding: str
) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    async with http.post(relay.url + "?timeout=30s", data=body, headers=headers) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


def assert_no_traceback(relay: RunningRelay) -> None:
    stderr = relay.process.stderr()
    assert "Traceback" not in stderr, stderr
    assert relay.process.popen.poll() is None, stderr


async def test_gzip_deflate_and_raw_deflate_are_delivered(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    bodies = {
        "gzip": gzip.compress(BODY),
        "GZip ": gzip.compress(BODY),  # the name is case-insensitive
        "deflate": zlib.compress(BODY),
        "identity": BODY,
    }
    for encoding, body in bodies.items():
        assert await post(http, relay, body, encoding) == (200, {"accepted": 5, "deadLettered": 0})
    raw = raw_deflate.compress(BODY) + raw_deflate.flush()
    assert await post(http, relay, raw, "deflate") == (200, {"accepted": 5, "deadLettered": 0})
    # Two gzip members one after the other, as `cat a.gz b.gz` makes: one body.
    half = len(BODY) // 2
    members = gzip.compress(BODY[:half]) + gzip.compress(BODY[half:])
    assert await post(http, relay, members, "gzip") == (200, {"accepted": 5, "deadLettered": 0})
    assert len(await read_topic(relay.bootstrap, relay.topic, 30)) == 30
    assert_no_traceback(relay)


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "x-gzip", "gzip, br"])
async def test_unsupported_encoding_is_a_json_415(
    start_relay: StartRelay, http: aiohttp.ClientSession, encoding: str
) -> None:
    relay = await start_relay()
    status, answer = await post(http, relay, gzip.compress(BODY), encoding)
    assert status == 415 and answer["status"] == 415
    assert repr(encoding) in answer["error"] and "gzip" in answer["error"]
    assert await topic_size(relay.bootstrap, relay.topic) == 0
    assert_no_traceback(relay)


async def test_bad_and_truncated_gzip_are_a_json_400_naming_the_problem(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    status, answer = await post(http, relay, BODY, "gzip")  # plain JSON that says it is gzip
    assert (status, answer["status"]) == (400, 400)
    assert "not a valid gzip body" in answer["error"], answer
    compressed = gzip.compress(BODY)
    for cut in (10, len(compressed) // 2, len(compressed) - 4):
        status, answer = await post(http, relay, compressed[:cut], "gzip")
        assert (status, answer["status"]) == (400, 400)
        assert "truncated gzip body" in answer["error"], answer
    status, answer = await post(http, relay, compressed + b"trailing junk", "gzip")
    assert status == 400 and "not a valid gzip body" in answer["error"], answer
    status, answer = await post(http, relay, b"\x00not deflate at all", "deflate")
    assert status == 400 and "not a valid deflate body" in answer["error"], answer
    assert await topic_size(relay.bootstrap, relay.topic) == 0
    # The relay still answers on the same terms afterwards.
    assert await post(http, relay, compressed, "gzip") == (200, {"accepted": 5, "deadLettered": 0})
    assert_no_traceback(relay)


async def test_decoded_size_is_bounded_by_max_body_bytes(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay("--max-body-bytes", "100000")
    for body, encoding in (
        (gzip.compress(b" " * 5_000_000), "gzip"),  # 5 KB that decodes to 5 MB
        (zlib.compress(b" " * 5_000_000), "deflate"),
    ):
        status, answer = await post(http, relay, body, encoding)
        assert status == 413 and "100000" in answer["error"], answer
    assert await topic_size(relay.bootstrap, relay.topic) == 0
    assert_no_traceback(relay)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw deflate"])
def test_decoder_takes_the_body_a_byte_at_a_time(encoding: str) -> None:
    if encoding == "gzip":
        encoded = gzip.compress(BODY)
    elif encoding == "deflate":
        encoded = zlib.compress(BODY)
    else:
        raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        encoded = raw.compress(BODY) + raw.flush()
    decoder = BodyDecoder(encoding.split()[-1], len(BODY))
    decoded = b"".join(b"".join(decoder.decode(encoded[i : i + 1])) for i in range(len(encoded)))
    decoder.finish()
    assert decoded == BODY
    with pytest.raises(PayloadTooLarge):
        BodyDecoder(encoding.split()[-1], len(BODY) - 1).decode(encoded)
