"""How the spool frames an ``OutboundRecord`` on disk, and how it finds where valid data ends.

A frame is ``<u32 body length> <u32 crc32 of body> <body>``, little-endian. The body is a fixed
header (version, flags, Kafka timestamp, the time it was spooled, lengths) followed by topic, key,
value and headers as raw bytes. A frame whose length runs past the end of the data, or whose
checksum does not match, marks the end of valid data: it is what a write cut short by SIGKILL or
a power loss leaves, and nothing from there on is ever decoded into a record.

zlib's crc32 is in the standard library, runs in C and catches torn and zeroed tails, which is
all the spool needs (it guards against crashes, not against an adversary).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from relay.events.records import OutboundRecord

_FRAME = struct.Struct("<II")
# version, flags, timestamp_ms, spooled_ms, topic length, key length, value length, header count
_BODY = struct.Struct("<BBqqHIIH")
_HEADER = struct.Struct("<HI")
_VERSION = 1
_HAS_KEY = 1
_HAS_TIMESTAMP = 2


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    """A record read back from a segment: ``end`` is the byte offset just past its frame."""

    record: OutboundRecord
    spooled_ms: int
    end: int


class CorruptFrame(ValueError):
    """A frame passed its checksum but its body does not parse (written by another version)."""


def frame_size(record: OutboundRecord) -> int:
    """Bytes ``encode(record, ...)`` will produce, without building them."""
    topic = len(record.topic.encode())
    key = len(record.key) if record.key is not None else 0
    headers = sum(_HEADER.size + len(name.encode()) + len(v) for name, v in record.headers)
    return _FRAME.size + _BODY.size + topic + key + len(record.value) + headers


def encode(record: OutboundRecord, spooled_ms: int) -> bytes:
    """One frame for ``record``; ``spooled_ms`` is the wall-clock time it enters the spool."""
    topic = record.topic.encode()
    key = record.key if record.key is not None else b""
    flags = (_HAS_KEY if record.key is not None else 0) | (
        _HAS_TIMESTAMP if record.timestamp_ms is not None else 0
    )
    parts = [
        _BODY.pack(
            _VERSION,
            flags,
            record.timestamp_ms or 0,
            spooled_ms,
            len(topic),
            len(key),
            len(record.value),
            len(record.headers),
        ),
        topic,
        key,
        record.value,
    ]
    for name, value in record.headers:
        encoded_name = name.encode()
        parts += [_HEADER.pack(len(encoded_name), len(value)), encoded_name, value]
    body = b"".join(parts)
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def frames(data: bytes | memoryview) -> Iterator[tuple[memoryview, int]]:
    """Yield ``(body, end offset)`` for each intact frame of ``data``, in order.

    Stops silently at the first frame that is cut short or fails its checksum; the caller compares
    the last ``end`` with ``len(data)`` to learn whether there was a torn tail.
    """
    view = memoryview(data)
    offset = 0
    while offset + _FRAME.size <= len(view):
        length, crc = _FRAME.unpack_from(view, offset)
        start = offset + _FRAME.size
        end = start + length
        # A zeroed tail has length 0 and crc32(b"") == 0: the minimum length rejects it.
        if length < _BODY.size or end > len(view):
            return
        body = view[start:end]
        if zlib.crc32(body) != crc:
            return
        yield body, end
        offset = end


def spooled_ms(body: memoryview) -> int:
    """The spool time of a frame body from ``frames``, without decoding the rest."""
    return int(_BODY.unpack_from(body)[3])


def decode(body: memoryview, end: int) -> SpooledRecord:
    """Decode one frame body from ``frames``. Raises CorruptFrame when it does not parse."""
    try:
        version, flags, ts, spooled, topic_len, key_len, value_len, count = _BODY.unpack_from(body)
        if version != _VERSION:
            raise CorruptFrame(f"unknown spool frame version {version}")
        offset = _BODY.size
        topic = bytes(body[offset : offset + topic_len]).decode()
        offset += topic_len
        key = bytes(body[offset : offset + key_len]) if flags & _HAS_KEY else None
        offset += key_len
        value = bytes(body[offset : offset + value_len])
        offset += value_len
        headers = []
        for _ in range(count):
            name_len, header_len = _HEADER.unpack_from(body, offset)
            offset += _HEADER.size
            name = bytes(body[offset : offset + name_len]).decode()
            offset += name_len
            headers.append((name, bytes(body[offset : offset + header_len])))
            offset += header_len
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptFrame(str(exc)) from exc
    if offset != len(body):
        raise CorruptFrame(f"frame body has {len(body) - offset} unexpected trailing bytes")
    record = OutboundRecord(
        topic=topic,
        value=value,
        key=key,
        headers=tuple(headers),
        timestamp_ms=ts if flags & _HAS_TIMESTAMP else None,
    )
    return SpooledRecord(record, spooled, end)
