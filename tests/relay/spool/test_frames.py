"""Spool frames: every record survives a round trip, and a damaged tail is never decoded."""

from __future__ import annotations

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
    assert decoded(data) == RECORDS[:1]
    assert [end for _, end in frames.frames(data)] == [len(whole)]


def test_zeroed_tail_is_not_a_frame() -> None:
    # A crash can leave a file extended with zeros; crc32(b"") is 0, so length 0 must not pass.
    data = encoded(RECORDS[:2]) + bytes(64)
    assert decoded(data) == RECORDS[:2]


def test_flipped_byte_stops_at_that_frame() -> None:
    data = bytearray(encoded(RECORDS))
    second = len(frames.encode(RECORDS[0], 42))
    data[second + 20] ^= 0xFF
    assert decoded(bytes(data)) == RECORDS[:1]


def test_body_that_passes_the_checksum_but_does_not_parse_is_corrupt() -> None:
    body = bytearray(frames.encode(RECORDS[0], 0)[8:])
    body[0] = 99  # unknown version
    frame = struct.pack("<II", len(body), zlib.crc32(body)) + body
    [(view, end)] = list(frames.frames(frame))
    with pytest.raises(frames.CorruptFrame):
        frames.decode(view, end)
