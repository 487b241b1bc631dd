"""How the spool frames an ``OutboundRecord`` on disk, and how it finds the valid frames.

A frame is ``<u32 body length> <u32 crc32 of body> <body>``, little-endian. The body is a fixed
header (version, flags, Kafka timestamp, the time it was spooled, lengths) followed by topic, key,
value and headers as raw bytes.

Reading a segment, a frame whose length or checksum is wrong is skipped, not taken as the end: a
bad sector or a flipped bit in the middle of a sealed segment must not cost the fsynced frames
after it. The format has no sync marker, so the next frame is found by trying each later offset
where a body's version byte could be, as a frame: its fixed header must be consistent (version,
flags, lengths within the frame's) and its checksum right, so bytes that merely look like a
header are passed over. The damaged frame's own length is tried first: a flipped payload bit
leaves it right. When no later frame is found the rest is a torn tail, what a write cut short by
SIGKILL or a power loss leaves, and nothing of it is ever decoded into a record.

zlib's crc32 is in the standard library, runs in C and catches torn and zeroed tails and damaged
frames, which is all the spool needs: it guards against crashes and bad disks, not against an
adversary (keys and header values are the sender's text, so whoever could also choose where the
disk is damaged could have a frame found inside a damaged one).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from relay.events.records import OutboundRecord

_FRAME = struct.Struct("<II")
# version, flags, timestamp_ms, spooled_ms, topic length, key length, value length, header count
_BODY = struct.Struct("<BBqqHIIH")
_HEADER = struct.Struct("<HI")
_VERSION = 1
_HAS_KEY = 1
_HAS_TIMESTAMP = 2
# Where a frame may start again after a damaged one: its body's first byte is the version.
_VERSION_BYTE = re.compile(re.escape(bytes([_VERSION])))


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


@dataclass
class Scan:
    """What ``frames`` found besides the frames, once it is exhausted: the ``(start, end)``
    offsets of each damaged range it skipped, and ``end``, where the last frame ends (a torn
    tail follows when it is short of the data's length)."""

    skipped: list[tuple[int, int]] = field(default_factory=list)
    end: int = 0

    @property
    def skipped_bytes(self) -> int:
        return sum(end - start for start, end in self.skipped)


def frames(data: bytes | memoryview, scan: Scan | None = None) -> Iterator[tuple[memoryview, int]]:
    """Yield ``(body, end offset)`` for each intact frame of ``data``, in order, skipping damaged
    ranges (recorded in ``scan``) and stopping before a torn tail."""
    view = memoryview(data)
    scan = scan if scan is not None else Scan()
    offset = 0
    while offset < len(view):
        end = _frame_end(view, offset)
        if end is None:
            resumed = _next_frame(view, offset)
            if resumed is None:
                return
            scan.skipped.append((offset, resumed))
            offset = resumed
            continue
        yield view[offset + _FRAME.size : end], end
        offset = scan.end = end


def _frame_end(view: memoryview, offset: int) -> int | None:
    """The end of the frame at ``offset`` when its length fits and its checksum matches."""
    if offset + _FRAME.size > len(view):
        return None
    length: int
    crc: int
    length, crc = _FRAME.unpack_from(view, offset)
    start = offset + _FRAME.size
    end = start + length
    # A zeroed tail has length 0 and crc32(b"") == 0: the minimum length rejects it.
    if length < _BODY.size or end > len(view) or zlib.crc32(view[start:end]) != crc:
        return None
    return end


def _next_frame(view: memoryview, damaged: int) -> int | None:
    """The offset of the first frame after the damaged one at ``damaged`` that ``_resumes``;
    None when there is none (a torn tail)."""
    if damaged + _FRAME.size <= len(view):
        declared: int = damaged + _FRAME.size + _FRAME.unpack_from(view, damaged)[0]
        if declared < len(view) and _resumes(view, declared):
            return declared
    for found in _VERSION_BYTE.finditer(view, damaged + _FRAME.size + 1):
        candidate = found.start() - _FRAME.size
        if _resumes(view, candidate):
            return candidate
    return None


def _resumes(view: memoryview, offset: int) -> bool:
    """Whether a frame of this version starts at ``offset``, its header consistent and its
    checksum right."""
    if offset + _FRAME.size + _BODY.size > len(view):
        return False
    length = _FRAME.unpack_from(view, offset)[0]
    version, flags, _, _, topic, key, value, _ = _BODY.unpack_from(view, offset + _FRAME.size)
    if version != _VERSION or flags > _HAS_KEY | _HAS_TIMESTAMP:
        return False
    if _BODY.size + topic + key + value > length:
        return False
    return _frame_end(view, offset) is not None


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
