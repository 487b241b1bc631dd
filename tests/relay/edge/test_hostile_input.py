"""Hostile input against the running relay: a bounded fuzzing run, slow clients, limits.

The fuzzing run has a fixed budget (``FUZZ_REQUESTS`` requests, ``FUZZ_SECONDS`` at most) and a
fixed seed, so CI runs the same bodies every time; ``FUZZ_SEED`` in the environment changes it.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import time
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support.events import audit_events, event_list
from tests.support.kafka import read_topic, topic_size
from tests.support.net import wait_until
from tests.support.relay import RunningRelay, StartRelay

pytestmark = pytest.mark.integration

FUZZ_REQUESTS = 300
FUZZ_SECONDS = 60.0
MAX_BODY = 256 * 1024
SEED = int(os.environ.get("FUZZ_SEED", "20240611"))


class Fuzzer:
    """Makes hostile bodies; counts the valid events put in mixed bodies."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.events = audit_events()
        self.delivered: list[str] = []  # auditIDs of valid events in bodies answered 200
        self.serial = 0

    def valid_event(self) -> dict[str, Any]:
        event = dict(self.rng.choice(self.events))
        self.serial += 1
        event["auditID"] = f"fuzz-{SEED}-{self.serial}"
        return event

    def junk_value(self, depth: int = 0) -> Any:
        rng = self.rng
        choices: list[Any] = [
            None,
            rng.random() > 0.5,
            rng.randint(-(2**63), 2**64 - 1),
            rng.uniform(-1e308, 1e308),
            "".join(chr(rng.randint(1, 0x10FFFF)) for _ in range(rng.randint(0, 20)))
            .encode("utf-8", "replace")
            .decode("utf-8", "replace"),
        ]
        if depth < 3:
            choices.append([self.junk_value(depth + 1) for _ in range(rng.randint(0, 4))])
            choices.append({str(rng.random()): self.junk_value(depth + 1) for _ in range(3)})
        return rng.choice(choices)

    def mixed(self) -> tuple[bytes, list[str]]:
        """An EventList of valid events among invalid items of every JSON type."""
        items: list[Any] = []
        valid: list[str] = []
        for _ in range(self.rng.randint(1, 12)):
            if self.rng.random() < 0.5:
                event = self.valid_event()
                valid.append(event["auditID"])
                items.append(event)
            else:
                broken = self.valid_event()
                broken[self.rng.choice(["auditID", "stage", "verb", "stageTimestamp"])] = (
                    self.junk_value(2) if self.rng.random() < 0.5 else None
                )
                if isinstance(broken.get("auditID"), str):
                    broken["auditID"] = 7  # never counted as valid by accident
                items.append(self.rng.choice([broken, self.junk_value()]))
        return event_list(items), valid

    def hostile(self) -> bytes:
        rng = self.rng
        valid_body = event_list([self.valid_event() for _ in range(3)])
        kind = rng.randrange(9)
        if kind == 0:
            return rng.randbytes(rng.randint(0, 4096))
        if kind == 1:
            return valid_body[: rng.randint(0, len(valid_body) - 2)]
        if kind == 2:
            depth = rng.choice([100, 1000, 1025, 5000, 50000])
            opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
            return b'{"kind":"EventList","items":' + opener * depth + b"1" + closer * depth + b"}"
        if kind == 3:
            number = rng.choice([b"1e400", b"-1e400", b"9" * 400, b"1" + b"0" * 5000, b"NaN"])
            return b'{"kind":"EventList","items":[{"auditID":' + number + b"}]}"
        if kind == 4:
            cut = rng.randint(1, len(valid_body) - 2)
            return (
                valid_body[:cut]
                + rng.choice([b"\xff\xfe", b"\xc3", b"\xed\xa0\x80"])
                + (valid_body[cut:])
            )
        if kind == 5:
            return b"[" + b"1," * (MAX_BODY // 2) + b"1]"  # over --max-body-bytes
        if kind == 6:
            return orjson.dumps(self.junk_value())
        if kind == 7:
            return gzip.compress(valid_body)[: rng.randint(1, 40)]  # sent as gzip: truncated
        return b'{"kind":"EventList","items":[' + b"{}," * rng.randint(1, 2000) + b"{}]}"


CLOSED = 0  # the relay answered early (413, 400) and closed while the client was still sending


async def send(http: aiohttp.ClientSession, relay: RunningRelay, body: bytes, gz: bool) -> int:
    headers = {"Content-Type": "application/json"}
    if gz:
        headers["Content-Encoding"] = "gzip"
    try:
        async with http.post(relay.url + "?timeout=30s", data=body, headers=headers) as response:
            await response.read()
            return response.status
    except aiohttp.ClientConnectionError:
        # Refused before it was all sent: over the limit, or not the gzip it claims to be.
        if len(body) <= MAX_BODY and not gz:
            raise
        return CLOSED


async def test_fuzzing_run_never_5xx_never_crashes_and_delivers_every_valid_event(
    start_relay: StartRelay,
) -> None:
    relay = await start_relay("--max-body-bytes", str(MAX_BODY))
    # A connection per request: one the relay closed after an early answer is never reused.
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    fuzzer = Fuzzer(random.Random(SEED))
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + FUZZ_SECONDS
    sent = 0
    while sent < FUZZ_REQUESTS and time.monotonic() < deadline:
        mixed = sent % 3 == 0
        if mixed:
            body, valid = fuzzer.mixed()
        else:
            body, valid = fuzzer.hostile(), []
        gz = fuzzer.rng.random() < 0.1
        if gz and mixed:
            body = gzip.compress(body)
        status = await send(http, relay, body, gz or body[:2] == b"\x1f\x8b")
        sent += 1
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, f"request {sent} (seed {SEED}) got {status}: {body[:200]!r}"
        if mixed:
            assert status == 200, f"mixed body {sent} (seed {SEED}) got {status}"
            fuzzer.delivered.extend(valid)
        assert relay.process.popen.poll() is None, relay.process.stderr()
    assert sent >= FUZZ_REQUESTS // 2, f"only {sent} requests within {FUZZ_SECONDS}s"
    assert statuses.get(200, 0) >= sent // 3
    records = await read_topic(relay.bootstrap, relay.topic, len(fuzzer.delivered), timeout=60)
    delivered = [orjson.loads(record.value)["auditID"] for record in records]
    fuzz_ids = [audit_id for audit_id in delivered if audit_id in set(fuzzer.delivered)]
    assert sorted(fuzz_ids) == sorted(fuzzer.delivered)
    await http.close()
    assert "Traceback" not in relay.process.stderr()
    print(f"fuzzing: {sent} requests, statuses {sorted(statuses.items())}, seed {SEED}")


async def test_a_client_that_never_finishes_its_headers_is_cut_off(
    start_relay: StartRelay,
) -> None:
    relay = await start_relay("--client-timeout", "1")
    port = int(relay.base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /api/audits HTTP/1.1\r\nHost: x\r\nContent-Type: app")
    await writer.drain()
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), timeout=15)
    assert time.monotonic() - started < 10
    assert b" 200 " not in data
    writer.close()


async def test_a_client_that_sends_its_body_too_slowly_gets_408(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay("--client-timeout", "1")
    body = event_list(audit_events()[:2])

    async def trickle() -> Any:
        yield body[:10]
        await asyncio.sleep(3)  # the slow client under test, not a wait on a condition
        yield body[10:]

    async with http.post(relay.url, data=trickle()) as response:
        assert response.status == 408
        assert (await response.json())["error"].startswith("request body not received within")
    assert await topic_size(relay.bootstrap, relay.topic) == 0


async def test_oversized_headers_are_refused(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay()
    body = event_list(audit_events()[:1])
    async with http.post(relay.url, data=body, headers={"X-Big": "a" * 9000}) as response:
        assert 400 <= response.status < 500
    many = {f"X-Header-{index}": "v" for index in range(100)}
    async with http.post(relay.url, data=body, headers=many) as response:
        assert 400 <= response.status < 500
    async with http.post(relay.url, data=body) as response:
        assert response.status == 200


async def test_connections_over_the_limit_get_503_and_are_closed(
    start_relay: StartRelay, http: aiohttp.ClientSession
) -> None:
    relay = await start_relay("--max-connections", "3")
    port = int(relay.base.rsplit(":", 1)[1])
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]

    async def refused() -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        return data.startswith(b"HTTP/1.1 503") and b"Retry-After" in data

    await wait_until(refused, timeout=10, what="a connection over the limit to get 503")
    for _, writer in idle:
        writer.close()

    async def served() -> bool:
        async with http.get(f"{relay.base}/healthz") as response:
            return response.status == 200

    await wait_until(served, timeout=10, what="the relay to serve again")
    async with http.get(f"{relay.base}/metrics") as response:
        assert "relay_connections_refused_total" in await response.text()
