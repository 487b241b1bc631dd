"""The reversible escape of bytes that are not UTF-8, for events kube-apiserver wrote with them.

Go's JSON encoder passes such bytes through inside strings (a PATCH body's annotation value, as
sent), but the message contract promises UTF-8 to every consumer. The relay escapes them as
MirBSD's OPTU-8 does: each byte of the item that is not part of valid UTF-8 becomes the
character U+EF00 + byte (U+EF80..U+EFFF, private use), and, so that the escape is exactly
reversible, so does each byte of any character U+EF80..U+EFFF the item already held. The record
carries the header ``escaped-bytes`` (``audit_common.headers.ESCAPED_BYTES``): how many bytes
were escaped. An item that is valid UTF-8 is untouched and carries no header.
"""

from __future__ import annotations

import re

# A byte that was not UTF-8 (decoded by "surrogateescape" as U+DC80 + byte), or a character of
# the escape's own range.
_TO_ESCAPE = re.compile("[\udc80-\udcff\uef80-\uefff]+")
_ESCAPED = re.compile("[\uef80-\uefff]+")
_SURROGATE_BASE = 0xDC00
_ESCAPE_BASE = 0xEF00


def is_utf8(raw: bytes | memoryview) -> bool:
    """Whether ``raw`` is valid UTF-8 (Python's codec: no encoded surrogates)."""
    try:
        str(raw, "utf-8")
    except UnicodeDecodeError:
        return False
    return True


def escape(raw: bytes | memoryview) -> tuple[bytes, int]:
    """``raw`` as valid UTF-8, and the number of bytes escaped (0: ``raw`` as it was).

    Called by the relay's split for each item that is not valid UTF-8; never raises.
    """
    if is_utf8(raw):
        return bytes(raw), 0
    escaped = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal escaped
        out = []
        for char in match[0]:
            code = ord(char)
            if code < _ESCAPE_BASE:  # a byte that was not UTF-8
                out.append(chr(_ESCAPE_BASE + code - _SURROGATE_BASE))
            else:  # a character of the escape's range: each of its three bytes
                out.extend(chr(_ESCAPE_BASE + byte) for byte in char.encode())
        escaped += len(out)
        return "".join(out)

    text = _TO_ESCAPE.sub(replace, str(raw, "utf-8", "surrogateescape"))
    return text.encode(), escaped


def unescape(value: bytes) -> bytes:
    """The bytes ``escape`` was given, from what it made of them; for a record that carries the
    ``escaped-bytes`` header (in one that does not, U+EF80..U+EFFF are characters as sent)."""
    text = value.decode()
    return _ESCAPED.sub(
        lambda match: "".join(chr(ord(c) - _ESCAPE_BASE + _SURROGATE_BASE) for c in match[0]),
        text,
    ).encode("utf-8", "surrogateescape")
