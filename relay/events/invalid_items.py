"""The one dead letter of a request's invalid items: which they were, why, and what they held.

One record per invalid item let a request of a million tiny items build a million records
(issue 22); a request's invalid items are listed in one record instead, bounded in size: each
item's index, reason and size always (while they fit), its content while that fits too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from audit_common.escaped_bytes import escape

# A reason quotes what it refuses (a stageTimestamp's text...): cut to this in the listing.
MAX_REASON_CHARS = 300
# The listing's own members around the entries.
_OVERHEAD = 128


@dataclass(frozen=True, slots=True)
class InvalidItem:
    """An item of the request that is no event the relay can publish."""

    index: int
    reason: str
    content: bytes | None  # as received (escaped where not UTF-8); None: not kept
    escaped_bytes: int = 0
    size: int = 0  # of the item as received


def listing(invalid: Sequence[InvalidItem], items: int, limit: int) -> tuple[bytes, str]:
    """The value and the reason of the dead letter of ``invalid``, of a request of ``items``.

    The value is a JSON object: ``items`` (how many the request had), ``invalid`` (how many of
    them are listed here or not), ``listed``: for each, ``index``, ``reason``, ``size`` (its
    bytes as received), and, while the value stays within ``limit`` bytes, ``item``: its text,
    with ``escapedBytes`` when bytes of it were escaped (``audit_common.escaped_bytes``);
    ``unlisted``: how many did not fit. Called by ``relay.events.build.build_batch``.
    """
    listed: list[dict[str, object]] = []
    size = _OVERHEAD
    for item in invalid:
        entry: dict[str, object] = {
            "index": item.index,
            "reason": item.reason[:MAX_REASON_CHARS],
            "size": item.size,
        }
        size += len(orjson.dumps(entry)) + 1
        if size > limit:
            break
        if item.content is None:
            listed.append(entry)
            continue
        text, escaped = escape(item.content)
        content = text.decode()
        cost = len(orjson.dumps(content)) + 32  # the string, and the member names around it
        if size + cost <= limit:
            entry["item"] = content
            if escaped + item.escaped_bytes:
                entry["escapedBytes"] = escaped + item.escaped_bytes
            size += cost
        listed.append(entry)
    value = {
        "items": items,
        "invalid": len(invalid),
        "listed": listed,
        "unlisted": len(invalid) - len(listed),
    }
    reason = f"{len(invalid)} of {items} items are not audit events; item {invalid[0].index}: "
    return orjson.dumps(value), reason + invalid[0].reason[:MAX_REASON_CHARS]
