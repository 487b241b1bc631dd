"""Narrow decoding of the relay's messages: an event's top-level fields without the rest.

``orjson.loads`` of a whole event builds (and the consumer then frees) every object of a
RequestResponse event's 10-50 KB of request and response, which the CSV sink never prints:
that was most of a consumer's CPU. Here msgspec checks the whole value and keeps only the
fields ``ConsumedEvent``'s properties read, with values exactly as ``orjson.loads`` gives them;
when it cannot vouch for a value, the caller decodes it whole with orjson, so that what goes to
the dead-letter topic, and why, stays as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec
import orjson

from audit_common import json_scan, json_text


class _TopFields(msgspec.Struct):
    """The top-level fields the properties read, each kept as its JSON text; the rest is skipped
    (checked to be well-formed JSON, not decoded)."""

    auditID: msgspec.Raw = msgspec.Raw()
    stage: msgspec.Raw = msgspec.Raw()
    stageTimestamp: msgspec.Raw = msgspec.Raw()
    requestReceivedTimestamp: msgspec.Raw = msgspec.Raw()
    level: msgspec.Raw = msgspec.Raw()
    verb: msgspec.Raw = msgspec.Raw()
    requestURI: msgspec.Raw = msgspec.Raw()
    userAgent: msgspec.Raw = msgspec.Raw()
    user: msgspec.Raw = msgspec.Raw()
    impersonatedUser: msgspec.Raw = msgspec.Raw()
    sourceIPs: msgspec.Raw = msgspec.Raw()
    objectRef: msgspec.Raw = msgspec.Raw()
    responseStatus: msgspec.Raw = msgspec.Raw()
    annotations: msgspec.Raw = msgspec.Raw()


TOP_NAMES = _TopFields.__struct_fields__
_TOP_KEYS = tuple(orjson.dumps(name) + b":" for name in TOP_NAMES)
_decode_top = msgspec.json.Decoder(_TopFields).decode
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # the integers orjson.loads gives as int


def top_fields(value: bytes) -> dict[str, Any] | None:
    """The fields of ``_TopFields`` that ``value`` has, decoded as ``orjson.loads`` would; None
    when the narrow decoder cannot tell that ``orjson.loads(value)`` gives an object."""
    if not value.isascii():
        try:
            value.decode("utf-8")  # orjson rejects invalid UTF-8 anywhere, msgspec only where read
        except UnicodeDecodeError:
            return None
    try:
        top = _decode_top(value)
    except RecursionError:
        parts = _top_by_grammar(value)  # nested deeper than msgspec goes: a PATCH body as sent
        if parts is None:
            return None
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # not JSON, or not an object: orjson tells
    else:
        parts = [
            key + raw
            for key, raw in zip(_TOP_KEYS, msgspec.structs.astuple(top), strict=True)
            if raw
        ]
    # One orjson.loads of the kept fields' text, so that their values (big integers, floats)
    # are exactly what decoding the whole event gives.
    try:
        fields: dict[str, Any] = orjson.loads(b"{" + b",".join(parts) + b"}")
    except orjson.JSONDecodeError:
        return None  # a number out of orjson's range in a kept field
    return fields


def _top_by_grammar(value: bytes) -> list[bytes] | None:
    """The kept fields of ``value`` as ``_TOP_KEYS``' members, found by JSON's grammar; None
    when it is no JSON object."""
    try:
        spans = json_scan.members(value)
    except ValueError:
        return None
    return [
        key + value[slice(*spans[name])]
        for name, key in zip(TOP_NAMES, _TOP_KEYS, strict=True)
        if name in spans
    ]


def _finite_or_none(text: str) -> float | None:
    number = float(text)
    return number if math.isfinite(number) else None


def _orjson_number(value: Any) -> Any:
    """``value`` with integers orjson would read as floats (beyond 64 bits) made floats, and
    those beyond a float's range None."""
    if isinstance(value, dict):
        return {key: _orjson_number(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_orjson_number(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and not _INT_MIN <= value <= _INT_MAX:
        try:
            return float(value)
        except OverflowError:
            return None
    return value


def whole(value: bytes) -> Any:
    """The whole event, as ``orjson.loads`` gives it where it can. Raises ValueError when
    ``value`` is not JSON (RFC 8259).

    orjson refuses some valid JSON: a number beyond a float's range (1e999), which reads as
    null here (what orjson writes for an infinite float), and an escape that is no Unicode
    character (a lone ``\\ud800``), which the standard library reads as that code point. So a
    sink that reads the whole event does not fail on such a message forever. An event nested
    deeper than any parser goes (a PATCH body kube-apiserver logged as sent: Go accepts 10,000
    levels) is read member by member, a member too deep to read given as its JSON text.
    """
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as refused:
        try:
            lenient = msgspec.json.Decoder(float_hook=_finite_or_none)
            return _orjson_number(lenient.decode(value))
        except (msgspec.DecodeError, RecursionError):
            pass
        try:
            data = json_text.loads(value, parse_float=_finite_or_none, parse_int=int)
            return _orjson_number(data)
        except RecursionError:
            return _by_member(value, refused)
        except ValueError:
            raise refused from None  # not JSON: orjson's reason names the problem best


def _by_member(value: bytes, refused: orjson.JSONDecodeError) -> dict[str, Any]:
    """``whole`` of an object too deep to parse: each member parsed alone, or its JSON text."""
    try:
        spans = json_scan.members(value)
    except ValueError:
        raise refused from None
    data: dict[str, Any] = {}
    for name, span in spans.items():
        text = value[slice(*span)]
        try:
            data[name] = orjson.loads(text)
        except orjson.JSONDecodeError:
            data[name] = text.decode("utf-8", "replace")  # too deep, or what orjson refuses
    return data


def project(data: Mapping[str, Any]) -> dict[str, Any]:
    return {name: data[name] for name in TOP_NAMES if name in data}
