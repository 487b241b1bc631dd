"""Caps on what an alert repeats of its event: each ``%field`` value, and the alert as a whole.

A rule's output echoes fields of the event (image names, the whole object with ``jevt.obj``):
a 1.26 MB Pod made a 2.5 MB alert, which Kafka refused. Called by ``OutputFormat.render`` for
each value and by the alerts sink for the whole alert; a cut value ends with a marker that says
how much was cut.
"""

from __future__ import annotations

from typing import Any

__all__ = ["cut_text", "cut_value"]


def marker(dropped: int, total: int, unit: str) -> str:
    return f"...[truncated: {dropped} of {total} {unit} cut]"


def cut_text(text: str, limit: int) -> tuple[str, bool]:
    """``text`` kept to its first ``limit`` characters, with the marker; and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit] + marker(len(text) - limit, len(text), "characters"), True


def cut_value(value: Any, limit: int) -> tuple[Any, bool]:
    """A value of ``output_fields`` within about ``limit`` characters: a string cut as
    ``cut_text`` cuts it; a list keeps its first items (each cut) while their characters add up
    to ``limit``, then a marker item; anything else (numbers, null) as it is."""
    if isinstance(value, str):
        return cut_text(value, limit)
    if not isinstance(value, list):
        return value, False
    kept: list[Any] = []
    used = 0
    cut = False
    for item in value:
        if used >= limit:
            kept.append(marker(len(value) - len(kept), len(value), "items"))
            return kept, True
        item, item_cut = cut_value(item, limit - used)
        cut = cut or item_cut
        used += len(item) if isinstance(item, str) else len(str(item))
        kept.append(item)
    return kept, cut
