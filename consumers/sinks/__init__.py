"""The sinks audit-consumer can write to, by the name given to ``--sink``.

The contract is ``consumers.sinks.base.Sink``; to add a sink, add one module with a ``Sink``
subclass and one line below.
"""

from __future__ import annotations

from consumers.sinks.alerts import AlertsSink
from consumers.sinks.archive import ArchiveSink
from consumers.sinks.base import Sink
from consumers.sinks.csv_log import CsvLogSink
from consumers.sinks.http_forward import HttpForwardSink
from consumers.sinks.jsonl import JsonLinesSink
from consumers.sinks.postgres import PostgresSink

SINKS: dict[str, type[Sink]] = {
    "alerts": AlertsSink,
    "archive": ArchiveSink,
    "csv": CsvLogSink,
    "http": HttpForwardSink,
    "jsonl": JsonLinesSink,
    "postgres": PostgresSink,
}

__all__ = ["SINKS", "Sink"]
