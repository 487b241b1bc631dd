"""What the item builder makes of an item it cannot pass through: parsed and redacted, or
unreadable, and then withheld while redaction is on (``relay.events.dead_letters``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from msgspec import Raw

from audit_common import json_text


@dataclass(frozen=True, slots=True)
class Cleared:
    """What ``clear`` made of one item: the item parsed and, with a transform, redacted in place
    (``changed`` when anything was); or, when nothing could read it, why, and whether its bytes
    must be withheld from its dead letter (``withhold``: redaction is on)."""

    item: Any = None
    changed: bool = False
    unreadable: str | None = None
    withhold: bool = False


def clear(item: Any, transform: Callable[[dict[str, Any]], bool] | None) -> Cleared:
    """Parse ``item`` when it is raw bytes (``msgspec.Raw`` or ``bytes``, by orjson, or, for
    valid JSON it refuses, by ``json_text``), then apply ``transform`` (``Redactor.redact`` while
    redaction is on, None when off) to it if it is an object.

    The one call ``relay.events.build`` makes for each item it does not pass through. Never
    raises: bytes nothing can read (not JSON, not UTF-8, nested deeper than the parsers go)
    give ``unreadable``, with ``withhold`` set when a ``transform`` was given, since what the
    redactor cannot read may hold a Secret anywhere.
    """
    if isinstance(item, bytes | Raw):
        try:
            item = _parse(bytes(item))
        except (ValueError, RecursionError) as exc:
            reason = "nested too deeply to read" if isinstance(exc, RecursionError) else str(exc)
            redacting = transform is not None
            return Cleared(unreadable=f"item is unreadable: {reason}", withhold=redacting)
    changed = transform is not None and isinstance(item, dict) and transform(item)
    return Cleared(item, changed)


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json_text.loads(raw)
