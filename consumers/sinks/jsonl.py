"""``--sink jsonl``: one event per line as received (an audit.log line), stdout or rotated files."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Self

import orjson

from consumers.events import ConsumedEvent
from consumers.sinks.base import EventsRefused, Sink, build_each
from consumers.sinks.output import OutputSettings, OutputStream, output_from_args


class JsonLinesSink(Sink):
    """Appends each event's message value as one line; fsyncs files on ``flush``."""

    name = "jsonl"

    def __init__(self, settings: OutputSettings) -> None:
        self.settings = settings
        self._stream = OutputStream(settings)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        return cls(output_from_args(args))

    @staticmethod
    def line(event: ConsumedEvent) -> bytes:
        """The value as received; re-encoded only when it spans lines (not from the relay)."""
        raw = event.raw.rstrip(b"\r\n")
        if b"\n" in raw or b"\r" in raw:
            raw = orjson.dumps(event.data)
        return raw + b"\n"

    async def open(self) -> None:
        await self._stream.open()

    async def write(self, events: Sequence[ConsumedEvent]) -> None:
        """Append the lines; raises EventsRefused after that for events without one."""
        built, refused = build_each(events, self.line)
        await self._stream.write([line for _, line in built])
        if refused:
            raise EventsRefused(refused)

    async def flush(self) -> None:
        await self._stream.flush()

    async def close(self) -> None:
        await self._stream.close()
