"""What the item builder makes of an item it cannot pass through: parsed and redacted, or
unreadable (then read at the byte level, and withheld while redaction is on)."""

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
    (``changed`` when anything was); or, when nothing could read it, why."""

    item: Any = None
    changed: bool = False
    unreadable: str | None = None


def clear(item: Any, transform: Callable[[dict[str, Any]], bool] | None) -> Cleared:
    """Parse ``item`` when it is raw bytes (``msgspec.Raw`` or ``bytes``, by orjson, or, for
    valid JSON it refuses, by ``json_text``), then apply ``transform`` (``Redactor.redact`` while
    redaction is on, None when off) to it if it is an object.

    The one call ``relay.events.build`` makes for each item it does not pass through. Never
    raises: bytes nothing can read (not JSON, not UTF-8, nested deeper than the parsers go)
    give ``unreadable``; the builder then reads their shallow fields at the byte level
    (``relay.events.deep_items``) and, while redaction is on, withholds what the redactor could
    not clear.
    """
    if isinstance(item, bytes | Raw):
        try:
            item = parse_item(bytes(item))
        except (ValueError, RecursionError) as exc:
            reason = "nested too deeply to read" if isinstance(exc, RecursionError) else str(exc)
            return Cleared(unreadable=f"item is unreadable: {reason}")
    changed = transform is not None and isinstance(item, dict) and transform(item)
    return Cleared(item, changed)


def parse_item(raw: bytes) -> Any:
    """An item kept raw, parsed: by orjson, or, for valid JSON it refuses, by ``json_text``.
    Raises ValueError or RecursionError for what neither reads."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json_text.loads(raw)
