"""Spool recovery keeps every good frame: a damaged one costs only itself, a torn tail is cut."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest

from relay.events.build import encode_event, event_headers
from relay.events.records import EVENTS, OutboundRecord
from relay.spool import frames
from relay.spool.store import Spool
from tests.relay.spool.test_store import Sink, records, segment_files
from tests.support.corpus import corpus_events
from tests.support.kafka import read_topic, topic_size
from tests.support.net import wait_until
from tests.support.relay import StartRelay


def frame_spans(segment: Path) -> list[tuple[int, int]]:
    """The (start, end) of each frame of ``segment``, as written."""
    ends = [end for _, end in frames.frames(segment.read_bytes())]
    return list(zip([0, *ends[:-1]], ends, strict=True))


def damage(segment: Path, offset: int) -> None:
    data = bytearray(segment.read_bytes())
    data[offset] ^= 0xFF
    segment.write_bytes(bytes(data))


async def spool_segments(root: Path, batches: list[list[OutboundRecord]]) -> list[Path]:
    """Spool ``batches`` into one sealed segment each, as a stopped relay leaves them."""
    for batch in batches:
        async with Spool(root, max_bytes=1 << 30) as spool:
            await spool.append(batch)
    return segment_files(root)


async def test_a_damaged_middle_frame_of_a_sealed_segment_costs_only_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    [segment] = await spool_segments(tmp_path, [records(0, 10)])
    start, end = frame_spans(segment)[4]
    damage(segment, start + 30)  # in its payload: its length is right
    caplog.set_level(logging.ERROR, logger="relay.spool")
    async with Spool(tmp_path, max_bytes=1 << 30) as spool:
        stats = spool.stats()
        assert (stats.events, stats.corrupt_bytes) == (9, end - start)
        sink = Sink()
        await spool.replay(sink)
        assert spool.stats().corrupt_bytes == end - start  # found again, counted once
    assert sink.received == records(0, 4) + records(5, 5)
    [line] = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert f"skipped {end - start} damaged bytes ({start}-{end}), kept 9 records" in line
    assert str(segment) in line


async def test_several_damaged_segments_log_one_line_each_and_replay_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    segments = await spool_segments(tmp_path, [records(0, 10), records(10, 10), records(20, 10)])
    lost = {1, 2, 7, 13, 25, 29}  # 29 is the last frame of its segment: a tail, cut
    spans = [frame_spans(segment) for segment in segments]
    skipped = 0
    for index in lost:
        start, end = spans[index // 10][index % 10]
        damage(segments[index // 10], start + 2)  # its length: found again by searching
        skipped += end - start if index != 29 else 0
    tail = spans[2][9][1] - spans[2][9][0]
    caplog.set_level(logging.WARNING, logger="relay.spool")
    async with Spool(tmp_path, max_bytes=1 << 30) as spool:
        assert spool.stats().corrupt_bytes == skipped
        sink = Sink()
        await spool.replay(sink)
    assert [record.key for record in sink.received] == [
        record.key for n, record in enumerate(records(0, 30)) if n not in lost
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "damaged bytes" in m]) == 3
    [torn] = [m for m in messages if "torn tail" in m]
    assert f"dropping a torn tail of {tail} bytes after 8 records" in torn


async def test_a_torn_tail_after_damage_is_still_cut(tmp_path: Path) -> None:
    [segment] = await spool_segments(tmp_path, [records(0, 5)])
    start, _ = frame_spans(segment)[1]
    damage(segment, start + 40)
    torn = frames.encode(records(5, 1)[0], 0)[:-7]
    with segment.open("ab") as file:
        file.write(torn)
    whole = segment.stat().st_size - len(torn)
    async with Spool(tmp_path, max_bytes=1 << 30) as spool:
        assert segment.stat().st_size == whole
        sink = Sink()
        await spool.replay(sink)
    assert sink.received == records(0, 1) + records(2, 3)


@pytest.mark.integration
async def test_a_relay_on_a_damaged_spool_delivers_every_other_frames_events(
    start_relay: StartRelay, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    root = tmp_path / "spool"
    events = [
        {**event, "auditID": f"spooled-{n:03d}"} for n, event in enumerate(corpus_events()[:1] * 60)
    ]
    batch = [
        OutboundRecord(
            EVENTS,
            encode_event(event, "audit.k8s.io/v1"),
            event["auditID"].encode(),
            tuple(event_headers(event, "audit.k8s.io/v1", "c")),
        )
        for event in events
    ]
    [segment] = await spool_segments(root, [batch])
    spans = frame_spans(segment)
    for index in (10, 30, 31):
        damage(segment, spans[index][0] + 50)
    relay = await start_relay("--spool-dir", str(root))

    async def delivered() -> bool:
        return await topic_size(relay.bootstrap, relay.topic) >= 57

    await wait_until(delivered, timeout=60, what="the spool's good frames in Kafka")
    keys = sorted(r.key for r in await read_topic(relay.bootstrap, relay.topic, 57))
    assert keys == [f"spooled-{n:03d}".encode() for n in range(60) if n not in (10, 30, 31)]
    async with http.get(relay.base + "/metrics") as response:
        text = await response.text()
    skipped = sum(spans[n][1] - spans[n][0] for n in (10, 30, 31))
    assert f"relay_spool_corrupt_bytes_total {float(skipped)}" in text
    assert f"skipped {skipped} damaged bytes" in relay.process.stderr()
