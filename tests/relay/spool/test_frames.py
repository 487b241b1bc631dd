"""Spool frames: every record survives a round trip, and a damaged tail is never decoded."""

from __future__ import annotations

import itertools
import struct
import zlib

import pytest

from relay.events.records import DEAD_LETTER, EVENTS, OutboundRecord
from relay.spool import frames

RECORDS = [
    OutboundRecord(
        EVENTS,
        b'{"kind":"Event","auditID":"a"}',
        b"a",
        (("stage", b"ResponseComplete"), ("cluster", b"prod")),
        1_700_000_000_123,
    ),
    OutboundRecord(DEAD_LETTER, b"not json", None, (("reason", b"bad"),), None),
    OutboundRecord(EVENTS, b"", b"", (), 0),
    OutboundRecord(EVENTS, "ünïcode".encode() * 1000, "ключ".encode(), (("user", "é".encode()),)),
]


def encoded(records: list[OutboundRecord]) -> bytes:
    return b"".join(frames.encode(record, 42) for record in records)


def decoded(data: bytes) -> list[OutboundRecord]:
    return [frames.decode(body, end).record for body, end in frames.frames(data)]


def test_round_trip_keeps_every_field() -> None:
    data = encoded(RECORDS)
    assert decoded(data) == RECORDS
    ends = [end for _, end in frames.frames(data)]
    assert ends[-1] == len(data)
    assert [frames.spooled_ms(body) for body, _ in frames.frames(data)] == [42] * 4


def test_frame_size_matches_encoding() -> None:
    for record in RECORDS:
        assert frames.frame_size(record) == len(frames.encode(record, 0))


@pytest.mark.parametrize("cut", range(1, len(frames.encode(RECORDS[1], 0))))
def test_torn_tail_stops_before_the_cut_frame(cut: int) -> None:
    whole = encoded(RECORDS[:1])
    data = whole + frames.encode(RECORDS[1], 0)[:cut]
    records, scan = scanned(data)
    assert records == RECORDS[:1]
    assert scan.end == len(whole) and scan.skipped == []


def test_zeroed_tail_is_not_a_frame() -> None:
    # A crash can leave a file extended with zeros; crc32(b"") is 0, so length 0 must not pass.
    data = encoded(RECORDS[:2]) + bytes(64)
    assert decoded(data) == RECORDS[:2]


def scanned(data: bytes) -> tuple[list[OutboundRecord], frames.Scan]:
    scan = frames.Scan()
    return [frames.decode(body, end).record for body, end in frames.frames(data, scan)], scan


def spans(records: list[OutboundRecord]) -> list[tuple[int, int]]:
    """The (start, end) offset of each record's frame in ``encoded(records)``."""
    ends = list(itertools.accumulate(len(frames.encode(record, 42)) for record in records))
    return list(zip([0, *ends[:-1]], ends, strict=True))


MANY = [*RECORDS, *RECORDS, *RECORDS]


@pytest.mark.parametrize("where", [0, 3, 8, 20, 40, -1], ids=lambda where: f"byte-{where}")
def test_a_damaged_middle_frame_costs_only_itself(where: int) -> None:
    # Its length (0..3), checksum (4..7), version (8), header, payload, last byte.
    data = bytearray(encoded(MANY))
    start, end = spans(MANY)[5]
    data[(end if where < 0 else start) + where] ^= 0x5A
    records, scan = scanned(bytes(data))
    assert records == MANY[:5] + MANY[6:]
    assert scan.skipped == [(start, end)] and scan.end == len(data)


def test_several_damaged_frames_are_each_skipped() -> None:
    data = bytearray(encoded(MANY))
    positions = spans(MANY)
    for index in (0, 4, 5, 9, 11):
        data[positions[index][0] + 1] ^= 0xFF  # the length: found again by searching
    records, scan = scanned(bytes(data))
    assert records == [record for n, record in enumerate(MANY) if n not in (0, 4, 5, 9, 11)]
    whole = [positions[0], (positions[4][0], positions[5][1]), positions[9]]
    assert scan.skipped == whole and scan.skipped_bytes == sum(b - a for a, b in whole)
    assert scan.end == positions[11][0]  # the last one is a tail, as a torn write is


def test_a_zeroed_range_in_the_middle_is_skipped() -> None:
    data = bytearray(encoded(MANY))
    start, end = spans(MANY)[2]
    data[start:end] = bytes(end - start)
    records, scan = scanned(bytes(data))
    assert records == MANY[:2] + MANY[3:] and scan.skipped == [(start, end)]


def test_damage_that_looks_like_a_frame_header_is_passed_over() -> None:
    # A plausible length, this version, consistent lengths: only the checksum tells.
    data = bytearray(encoded(MANY))
    positions = spans(MANY)
    start, end = positions[3]
    fake_body = bytearray(frames.encode(MANY[3], 42)[8:])
    fake_body[-1] ^= 1
    data[start : start + 8] = struct.pack("<II", len(fake_body), zlib.crc32(fake_body) ^ 1)
    records, scan = scanned(bytes(data))
    assert records == MANY[:3] + MANY[4:]
    assert scan.skipped == [(start, end)]


def test_a_damaged_last_frame_is_a_tail() -> None:
    data = bytearray(encoded(MANY))
    start, _ = spans(MANY)[-1]
    data[start + 30] ^= 0xFF
    records, scan = scanned(bytes(data))
    assert records == MANY[:-1] and scan.skipped == [] and scan.end == start


def test_body_that_passes_the_checksum_but_does_not_parse_is_corrupt() -> None:
    body = bytearray(frames.encode(RECORDS[0], 0)[8:])
    body[0] = 99  # unknown version
    frame = struct.pack("<II", len(body), zlib.crc32(body)) + body
    [(view, end)] = list(frames.frames(frame))
    with pytest.raises(frames.CorruptFrame):
        frames.decode(view, end)
