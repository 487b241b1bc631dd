"""Items no parser reads whole: an event's shallow fields read, its deep objects kept as bytes.

kube-apiserver writes a PATCH body into ``requestObject`` as sent, nested up to the 10,000
levels Go's decoder accepts; orjson cannot decode past 1,024 levels nor encode past 255, and
the standard library recurses. The fields the relay reads (auditID, stage, verb, user,
objectRef, timestamps, annotations...) are shallow, so ``audit_common.json_scan.members`` finds
the event's top-level members, each is parsed alone but ``requestObject`` and
``responseObject``, and the record's value is the item's own bytes.
"""

from __future__ import annotations

from typing import Any

import orjson

from audit_common import json_scan, json_text
from relay.events.raw_fields import with_envelope

OBJECTS = ("requestObject", "responseObject")
_ENVELOPE = ("kind", "apiVersion")


class DeepItem:
    """An item read by ``read``: its fields but the objects, and the spans of all members."""

    __slots__ = ("fields", "raw", "spans")

    def __init__(self, raw: bytes, fields: dict[str, Any], spans: dict[str, json_scan.Span]):
        self.raw = raw
        self.fields = fields
        self.spans = spans

    def objects(self) -> list[bytes]:
        """The JSON of the event's request and response objects, those it has."""
        return [self.raw[slice(*self.spans[name])] for name in OBJECTS if name in self.spans]

    def value(self, api_version: str) -> bytes:
        """The record's value: the item's own bytes on one line, ``kind`` and ``apiVersion``
        first (``raw_fields.with_envelope``), its own ones left out."""
        raw = self.raw
        if any(name in self.spans for name in _ENVELOPE):
            raw = b"{%s}" % b",".join(
                orjson.dumps(name) + b":" + raw[slice(*span)]
                for name, span in self.spans.items()
                if name not in _ENVELOPE
            )
        return with_envelope(json_text.one_line(raw), api_version)


def read(raw: bytes) -> DeepItem:
    """The item ``raw``, its every member but the objects parsed (as ``clearance.parse_item``).

    Called by ``relay.events.build`` for an item orjson and the standard library refused.
    Raises ValueError, for the dead letter's reason, when it is no JSON object, or when a member
    other than the objects is itself too deep to parse.
    """
    spans = json_scan.members(raw)
    fields: dict[str, Any] = {}
    view = memoryview(raw)
    for name, (start, end) in spans.items():
        if name in OBJECTS:
            continue
        text = view[start:end]
        try:
            fields[name] = orjson.loads(text)
        except orjson.JSONDecodeError:
            try:
                fields[name] = json_text.loads(bytes(text))
            except RecursionError:
                raise ValueError(f"field {name!r} is nested too deeply to read") from None
    return DeepItem(raw, fields, spans)
