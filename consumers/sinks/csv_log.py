"""``--sink csv``: one CSV row per event, the columns of the original webhook example by default.

Rows are quoted as RFC 4180 says (request URIs and authorization reasons hold commas and
quotes, names and user names line feeds and carriage returns, which the apiserver
percent-decodes) and end with a line feed; only rows go to the output, logs go to stderr.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Self

from audit_common.errors import ConfigError
from audit_common.options import EnvArgumentParser
from consumers.events import ConsumedEvent
from consumers.sinks.base import EventsRefused, Sink, build_each
from consumers.sinks.output import OutputSettings, OutputStream, output_from_args

Field = Callable[[ConsumedEvent], str | None]


def _joined(values: tuple[str, ...]) -> str | None:
    return ",".join(values) if values else None


# Every column --csv-columns may name, in the order the documentation lists them.
COLUMNS: dict[str, Field] = {
    "stageTimestamp": lambda event: event.stage_timestamp,
    "level": lambda event: event.level,
    "stage": lambda event: event.stage,
    "requestURI": lambda event: event.request_uri,
    "verb": lambda event: event.verb,
    "username": lambda event: event.username,
    "sourceIPs": lambda event: _joined(event.source_ips),
    "resource": lambda event: event.resource,
    "name": lambda event: event.name,
    "decision": lambda event: event.decision,
    "reason": lambda event: event.reason,
    "namespace": lambda event: event.namespace,
    "cluster": lambda event: event.cluster,
    "userAgent": lambda event: event.user_agent,
    "code": lambda event: event.response_code,
    "auditID": lambda event: event.audit_id,
    "requestReceivedTimestamp": lambda event: event.request_received_timestamp,
    "impersonatedUser": lambda event: event.impersonated_user,
    "groups": lambda event: _joined(event.groups),
    "subresource": lambda event: event.subresource,
}
# The original example's columns, in its order.
DEFAULT_COLUMNS = (
    "stageTimestamp,level,stage,requestURI,verb,username,sourceIPs,resource,name,decision,reason"
)


@dataclass(frozen=True)
class CsvSettings:
    output: OutputSettings
    columns: tuple[str, ...]
    missing: str = "UNKNOWN"
    prefix: str = ""
    header: bool = False


def parse_columns(text: str) -> tuple[str, ...]:
    """The column names of ``--csv-columns``; raises ConfigError naming the unknown ones."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in COLUMNS]
    if unknown or not names:
        raise ConfigError(
            f"--csv-columns: unknown column(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(COLUMNS)}"
        )
    return names


class CsvLogSink(Sink):
    """Writes one CSV row per event to stdout or ``--output``; fsyncs files on ``flush``."""

    name = "csv"

    def __init__(self, settings: CsvSettings) -> None:
        self.settings = settings
        self._fields = [COLUMNS[name] for name in settings.columns]
        header = self._encode(list(settings.columns)) if settings.header else b""
        self._stream = OutputStream(settings.output, header=header, quote=b'"')

    @classmethod
    def add_arguments(cls, parser: EnvArgumentParser) -> None:
        add = parser.add_option
        add(
            "--csv-columns",
            default=DEFAULT_COLUMNS,
            metavar="LIST",
            help=f"comma-separated columns of the csv sink, from: {', '.join(COLUMNS)}",
        )
        add("--csv-missing", default="UNKNOWN", help="what the csv sink prints for a missing value")
        add("--csv-prefix", default="", help="text before every csv line, e.g. '###' as originally")
        add("--csv-header", action="store_true", help="start the csv output with a header row")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        return cls(
            CsvSettings(
                output=output_from_args(args),
                columns=parse_columns(args.csv_columns),
                missing=args.csv_missing,
                prefix=args.csv_prefix,
                header=args.csv_header,
            )
        )

    def row(self, event: ConsumedEvent) -> list[str]:
        """The cells of ``event``'s row, before quoting."""
        missing = self.settings.missing
        cells = (field(event) for field in self._fields)
        return [missing if cell is None else cell for cell in cells]

    def _encode(self, row: list[str]) -> bytes:
        buffer = io.StringIO()
        # The csv module quotes a cell holding a character of the line terminator: "\r\n"
        # has it quote carriage returns as well as line feeds; the row then ends with "\n".
        csv.writer(buffer, lineterminator="\r\n").writerow(row)
        text = self.settings.prefix + buffer.getvalue()[:-2] + "\n"
        # A lone surrogate (a JSON escape that is no Unicode character) as that escape.
        return text.encode("utf-8", "backslashreplace")

    async def open(self) -> None:
        await self._stream.open()

    async def write(self, events: Sequence[ConsumedEvent]) -> None:
        """Append the rows; raises EventsRefused after that for events without one."""
        built, refused = build_each(events, lambda event: self._encode(self.row(event)))
        await self._stream.write([record for _, record in built])
        if refused:
            raise EventsRefused(refused)

    async def flush(self) -> None:
        await self._stream.flush()

    async def close(self) -> None:
        await self._stream.close()
