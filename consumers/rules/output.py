"""A rule's ``output`` template: text with ``%field`` (``%field[arg]``) substitutions, formatted
as Falco formats it for its JSON output.

The loader builds an ``OutputFormat`` per rule (binding each field once); ``RuleSet.evaluate``
calls ``render`` for each alert. Falco prefixes the text with the event time and the priority
(``10:00:00.123456789: Warning ...``, the time of day in UTC here) and lists every substituted
field in ``output_fields``, plus ``evt.time`` (nanoseconds): missing values are ``<NA>`` in the
text and null in the fields, a list field is ``(a,b)`` in the text and an array in the fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from consumers.rules.bounds import cut_text, cut_value
from consumers.rules.fields import BoundField, Value
from consumers.rules.fields_jevt import stage_time_ns

__all__ = ["OutputFormat", "Rendered", "event_time_ns", "format_time"]

_TOKEN = re.compile(r"%(\d*)([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)(?:\[([^\]]*)\])?")
_NS = 1_000_000_000


def event_time_ns(event: Mapping[str, Any]) -> int | None:
    """The event's time as the k8saudit plugin stamps it (its ``stageTimestamp``), in
    nanoseconds; None when it has none (the plugin drops such an event)."""
    stamp = event.get("stageTimestamp")
    return stage_time_ns(stamp) if isinstance(stamp, str) else None


def format_time(ns: int) -> str:
    """Falco's JSON ``time``: RFC 3339 in UTC with nanoseconds."""
    return f"{datetime.fromtimestamp(ns // _NS, UTC):%Y-%m-%dT%H:%M:%S}.{ns % _NS:09d}Z"


def _text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Rendered(NamedTuple):
    """An alert's ``output`` text and ``output_fields``; ``cut`` when a value was cut."""

    output: str
    fields: dict[str, Any]
    cut: bool = False


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """A parsed template: literal text and bound fields, alternating."""

    parts: tuple[str | tuple[BoundField, int], ...]

    @classmethod
    def parse(cls, template: str, bind: Callable[[str, str | None], BoundField]) -> OutputFormat:
        """Splits ``template`` into text and fields (``%field``, ``%field[arg]``, and as in
        Falco ``%NNfield``, padded or cut to NN characters in the text). Raises ValueError
        for a ``%`` that starts no field; ``bind`` raises RulesError for an unknown field."""
        parts: list[str | tuple[BoundField, int]] = []
        end = 0
        for start in (index for index, char in enumerate(template) if char == "%"):
            if start < end:
                continue  # a '%' inside a field argument
            match = _TOKEN.match(template, start)
            if match is None:
                raise ValueError(f"invalid formatting token at {template[start : start + 20]!r}")
            parts.append(template[end:start])
            width, name, arg = match.groups()
            parts.append((bind(name, arg), int(width) if width else 0))
            end = match.end()
        parts.append(template[end:])
        return cls(tuple(part for part in parts if part != ""))

    def render(
        self,
        event: Mapping[str, Any],
        cache: dict[str, list[Value]],
        time_ns: int,
        label: str,
        field_max: int | None = None,
    ) -> Rendered:
        """The alert's ``output`` text and ``output_fields`` for ``event`` at ``time_ns``, for a
        rule of priority ``label``, reusing the values already extracted into ``cache``; with
        ``field_max``, each value cut to about that many characters in both (``bounds``)."""
        pieces = [format_time(time_ns)[11:29], ": ", label, " "]
        fields: dict[str, Any] = {"evt.time": time_ns}
        cut = False
        for part in self.parts:
            if isinstance(part, str):
                pieces.append(part)
                continue
            field, width = part
            values = cache.get(field.text)
            if values is None:
                values = cache[field.text] = field.extract(event)
            if not values:
                text = "<NA>"
                fields[field.text] = None
            elif field.is_list:
                text = "(" + ",".join(_text(value) for value in values) + ")"
                fields[field.text] = list(values)
            else:
                text = _text(values[0])
                fields[field.text] = values[0]
            if field_max is not None:
                text, text_cut = cut_text(text, field_max)
                fields[field.text], value_cut = cut_value(fields[field.text], field_max)
                cut = cut or text_cut or value_cut
            pieces.append(text.ljust(width)[:width] if width else text)
        return Rendered("".join(pieces), fields, cut)
