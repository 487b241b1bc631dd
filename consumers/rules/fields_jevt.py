"""The ``jevt.*`` and ``json.*`` fields of Falco's json plugin, which the k8s_audit rules read
alongside ``ka.*`` (``jevt.value[/stage]``, ``jevt.rawtime exists``), and the two time fields of
Falco's own pre-plugin audit engine (``jevt.time``, ``jevt.time.iso8601``) that older rules
files still print.

The event's time is its ``stageTimestamp``: the k8saudit plugin stamps each event with it (and
drops an event without one, so here these fields are ``<NA>`` for such an event).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from consumers.rules.fields_base import (
    MISSING,
    Arg,
    Extract,
    FieldDef,
    Value,
    lookup,
    plain,
    text,
)

_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9})\d*)?([Zz]|[+-]\d{2}:\d{2})"
)
_NS = 1_000_000_000


def parse_pointer(arg: str) -> tuple[str, ...]:
    """The reference tokens of the JSON pointer ``arg``. As the json plugin reads it, the leading
    ``/`` is optional (``jevt.value[stage]`` works too) and ``~1``/``~0`` are unescaped."""
    body = arg[1:] if arg.startswith("/") else arg
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in body.split("/"))


def _value(arg: Arg) -> Extract:
    tokens = arg if isinstance(arg, tuple) else parse_pointer(str(arg))

    def extract(event: Mapping[str, Any]) -> list[Value]:
        value = lookup(event, tokens)
        return [] if value is MISSING else [text(value)]

    return extract


def _obj(event: Mapping[str, Any]) -> list[Value]:
    # The json plugin indents the event with Go's json.Indent(data, "", "  "): the same layout
    # as orjson's two-space indent, "key": value, one member per line.
    try:
        return [orjson.dumps(event, option=orjson.OPT_INDENT_2).decode()]
    except orjson.JSONEncodeError:
        pass  # nested deeper than orjson writes (255), or integers beyond 64 bits
    try:
        # Each member read with [], which decodes a member the alerts sink kept as text.
        members = {key: event[key] for key in event}
        return [json.dumps(members, indent=2, ensure_ascii=False)]
    except (RecursionError, TypeError, ValueError):
        return []  # deeper than Python writes: the field is not available


@lru_cache(maxsize=1024)
def stage_time_ns(stamp: str) -> int | None:
    """``stageTimestamp`` (RFC 3339, up to nanoseconds) as nanoseconds since the epoch; None when
    it is no such time (the plugin then drops the event). Cached: every rule reading a time field
    asks again for the same event."""
    match = _RFC3339.fullmatch(stamp)
    if match is None:
        return None
    day, clock, fraction, zone = match.groups()
    try:
        moment = datetime.fromisoformat(f"{day}T{clock}{zone.upper()}")
    except ValueError:
        return None
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    return int(moment.timestamp()) * _NS + nanos


def _event_ns(event: Mapping[str, Any]) -> int | None:
    stamp = event.get("stageTimestamp")
    return stage_time_ns(stamp) if isinstance(stamp, str) else None


def _rawtime(event: Mapping[str, Any]) -> list[Value]:
    ns = _event_ns(event)
    return [] if ns is None else [str(ns)]


@lru_cache(maxsize=1024)
def _clock(ns: int) -> tuple[str, str]:
    """The time of day and the ISO 8601 time of ``ns``, as Falco's pre-plugin engine printed
    them (it used its host's zone for the time of day; a consumer runs in UTC)."""
    moment = datetime.fromtimestamp(ns // _NS, UTC)
    fraction = f"{ns % _NS:09d}"
    return f"{moment:%H:%M:%S}.{fraction}", f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction}+0000"


def _time(event: Mapping[str, Any]) -> list[Value]:
    ns = _event_ns(event)
    return [] if ns is None else [_clock(ns)[0]]


def _time_iso8601(event: Mapping[str, Any]) -> list[Value]:
    ns = _event_ns(event)
    return [] if ns is None else [_clock(ns)[1]]


def _value_field(name: str, description: str) -> FieldDef:
    return FieldDef(name, "string", False, "pointer", True, description, _value)


_POINTER = (
    "Extracts a value from a JSON-encoded input. Syntax is json.value[<json pointer>], where "
    "<json pointer> is a json pointer (see https://datatracker.ietf.org/doc/html/rfc6901)"
)
JEVT_FIELDS = (
    _value_field("json.value", _POINTER),
    plain("json.obj", "The full json message as a text string.", _obj),
    plain("json.rawtime", "The time of the event, identical to evt.rawtime.", _rawtime),
    _value_field("jevt.value", "Alias for json.value, provided for backwards compatibility."),
    plain("jevt.obj", "Alias for json.obj, provided for backwards compatibility.", _obj),
    plain(
        "jevt.rawtime", "Alias for json.rawtime, provided for backwards compatibility.", _rawtime
    ),
    plain(
        "jevt.time",
        "json event timestamp as a string that includes the nanosecond part",
        _time,
    ),
    plain(
        "jevt.time.iso8601",
        "json event timestamp in ISO 8601 format, including nanoseconds and time zone offset "
        "(in UTC)",
        _time_iso8601,
    ),
)
