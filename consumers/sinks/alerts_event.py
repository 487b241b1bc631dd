"""The audit event as the alerts sink hands it to the rules: ``responseObject`` decoded only when
a rule reads it.

A list request logged at level RequestResponse carries the whole list in ``responseObject``
(tens to hundreds of KB): decoding it is most of the cost of decoding an event, and the k8saudit
fields read it only for ``ka.resp.name`` and ``jevt.*``. Every other top-level field is decoded
as ``ConsumedEvent.data`` decodes it (orjson), so the rules see the same values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import orjson

from consumers.event_json import whole
from consumers.events import ConsumedEvent

DEFERRED = "responseObject"

_split = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode


class _DeferredResponse(dict[str, Any]):
    """A decoded event whose ``responseObject`` is still JSON text until read with ``[]`` or
    ``get`` (how the rules' fields read events). Until then ``orjson.dumps`` (``jevt.obj``)
    writes that text as it came, compact."""

    __slots__ = ("_text",)

    def __init__(self, fields: dict[str, Any], text: bytes) -> None:
        super().__init__(fields)
        self._text: bytes | None = text

    def _decoded(self) -> Any:
        text, self._text = self._text, None
        assert text is not None
        value = whole(text)
        super().__setitem__(DEFERRED, value)
        return value

    def __getitem__(self, key: str) -> Any:
        if key == DEFERRED and self._text is not None:
            return self._decoded()
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key == DEFERRED and self._text is not None:
            return self._decoded()
        return super().get(key, default)


def for_rules(event: ConsumedEvent) -> Mapping[str, Any]:
    """``event`` for ``RuleSet.evaluate``: ``event.data`` itself when it has no
    ``responseObject`` or holds what only the slow path reads (numbers beyond orjson)."""
    try:
        parts = _split(event.raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return event.data
    if DEFERRED not in parts:
        return event.data
    deferred = bytes(parts[DEFERRED])
    fields: dict[str, Any] = {}
    try:
        for key, raw in parts.items():
            fields[key] = (
                orjson.Fragment(deferred) if key == DEFERRED else orjson.loads(memoryview(raw))
            )
    except orjson.JSONDecodeError:
        return event.data
    return _DeferredResponse(fields, deferred)
