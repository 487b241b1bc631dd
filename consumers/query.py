"""``audit-consumer query``: who did what to which object, when, from the postgres sink's store.

Prints the newest matching requests first, one row per request (its ResponseComplete or Panic
stage by default), as an aligned table, CSV with a header, or a JSON array. Name filters take
globs (``*`` and ``?``), the way the consumer's ``--include``/``--exclude`` do.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import asyncpg
import orjson

from audit_common.errors import AuditRelayError, ConfigError
from audit_common.options import EnvArgumentParser
from consumers.postgres.connection import (
    POSTGRES_ERRORS,
    PostgresConnection,
    add_postgres_arguments,
    postgres_connection_from_args,
)

ENV_PREFIX = "AUDIT_CONSUMER"
HEADERS = (
    *("time", "cluster", "user", "verb", "resource", "namespace", "name", "code"),
    *("decision", "source_ips", "stage", "audit_id"),
)
SELECT = """
SELECT stage_timestamp, cluster, username, verb,
       concat_ws('/', resource, subresource) AS resource, namespace, name, response_code,
       decision, source_ips, stage, audit_id
FROM audit_events
"""
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# Filters on a text column, by flag: (flag's dest, column).
_GLOB_FILTERS = (
    ("user", "username"),
    ("resource", "resource"),
    ("subresource", "subresource"),
    ("namespace", "namespace"),
    ("name", "name"),
    ("cluster", "cluster"),
)


@dataclass(frozen=True)
class QuerySettings:
    connection: PostgresConnection
    globs: tuple[tuple[str, str], ...] = ()  # (column, glob)
    verbs: tuple[str, ...] = ()
    stages: tuple[str, ...] = ("ResponseComplete", "Panic")
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    format: str = "table"


def parse_time(text: str, now: datetime) -> datetime:
    """``2024-06-04``, ``2024-06-04T13:00:00Z`` (no zone: UTC), or an age such as ``90m``,
    ``12h``, ``7d``, ``2w`` before ``now``. Raises ConfigError."""
    age = _DURATION.fullmatch(text.strip())
    if age:
        try:
            return now - timedelta(**{_UNITS[age[2]]: int(age[1])})
        except OverflowError as exc:
            raise ConfigError(f"{text!r} reaches back before the year 1") from exc
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigError(f"{text!r} is neither a date/time (ISO 8601) nor an age like 7d") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def glob_to_like(glob: str) -> str:
    """A LIKE pattern matching what ``glob`` matches (``*`` any text, ``?`` one character)."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _list(text: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())


def build_parser(environ: Mapping[str, str]) -> EnvArgumentParser:
    parser = EnvArgumentParser(
        prog="audit-consumer query",
        description="Who did what to which object, when: audit events from the store that "
        "'audit-consumer --sink postgres' writes, newest first.",
        env_prefix=ENV_PREFIX,
        environ=environ,
    )
    add_postgres_arguments(parser)
    option = parser.add_argument  # filters are per invocation: no environment variables
    option("--user", help="user name glob, e.g. 'system:serviceaccount:kube-system:*'")
    option("--verb", help="verbs, comma-separated, e.g. delete,deletecollection")
    option(
        "--resource",
        help="resource glob, e.g. secrets; 'pods/exec' (as the table prints it) also filters "
        "on the subresource",
    )
    option("--subresource", help="subresource glob, e.g. exec, attach, log, status")
    option("--namespace", help="namespace glob")
    option("--name", help="object name glob")
    option("--cluster", help="cluster glob (the relay's cluster name)")
    option("--since", help="from this time on: 2024-06-04, 2024-06-04T13:00:00Z, or 7d ago")
    option("--until", help="before this time (same forms as --since)")
    option(
        "--stage",
        default="ResponseComplete,Panic",
        help="stages to show, comma-separated, or 'all' (default: one row per request)",
    )
    option("--limit", type=int, default=100, help="most rows to print; 0 prints all")
    option("--format", choices=("table", "csv", "json"), default="table", help="output format")
    return parser


def settings_from_args(args: argparse.Namespace, now: datetime) -> QuerySettings:
    if args.limit < 0:
        raise ConfigError(f"--limit must be 0 or more, got {args.limit}")
    given = {dest: getattr(args, dest) for dest, _ in _GLOB_FILTERS}
    if given["resource"] and "/" in given["resource"]:
        given["resource"], _, subresource = given["resource"].partition("/")
        if given["subresource"] and given["subresource"] != subresource:
            raise ConfigError(
                f"--resource {args.resource} and --subresource {args.subresource} disagree"
            )
        given["subresource"] = subresource
    globs = tuple((column, given[dest]) for dest, column in _GLOB_FILTERS if given[dest])
    stages = () if args.stage.strip() == "all" else _list(args.stage)
    return QuerySettings(
        connection=postgres_connection_from_args(args),
        globs=globs,
        verbs=_list(args.verb),
        stages=stages,
        since=parse_time(args.since, now) if args.since else None,
        until=parse_time(args.until, now) if args.until else None,
        limit=args.limit,
        format=args.format,
    )


def build_sql(settings: QuerySettings) -> tuple[str, list[Any]]:
    """The statement and its arguments; every value the user gave is a bound parameter."""
    conditions: list[str] = []
    values: list[Any] = []

    def bind(value: Any) -> str:
        values.append(value)
        return f"${len(values)}"

    for column, glob in settings.globs:
        conditions.append(f"{column} LIKE {bind(glob_to_like(glob))}")
    if settings.verbs:
        conditions.append(f"verb = ANY({bind(list(settings.verbs))}::text[])")
    if settings.stages:
        conditions.append(f"stage = ANY({bind(list(settings.stages))}::text[])")
    if settings.since:
        conditions.append(f"stage_timestamp >= {bind(settings.since)}")
    if settings.until:
        conditions.append(f"stage_timestamp < {bind(settings.until)}")
    sql = SELECT
    if conditions:
        sql += "WHERE " + " AND ".join(conditions) + "\n"
    sql += "ORDER BY stage_timestamp DESC, id DESC"
    if settings.limit:
        sql += f" LIMIT {bind(settings.limit + 1)}"  # one more: whether --limit cut the result
    return sql, values


async def fetch(settings: QuerySettings) -> tuple[list[asyncpg.Record], bool]:
    """Run the query: the newest ``settings.limit`` matching rows (all for 0), and whether more
    matched than ``--limit`` let through. Called by ``run_query``, which says so on stderr.
    Raises SinkError (store unreachable) or ConfigError."""
    sql, values = build_sql(settings)
    connection = await settings.connection.connect()
    try:
        records = await connection.fetch(sql, *values)
        cut = bool(settings.limit) and len(records) > settings.limit
        return (records[: settings.limit] if cut else records), cut
    except asyncpg.UndefinedTableError as exc:
        raise ConfigError(
            f"no audit store at {settings.connection.target}: "
            "'audit-consumer --sink postgres' creates it"
        ) from exc
    except POSTGRES_ERRORS as exc:
        raise settings.connection.translate(exc, "query") from exc
    finally:
        await connection.close()


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def render(records: Sequence[asyncpg.Record], output_format: str, out: TextIO) -> None:
    rows = [[_cell(value) for value in record.values()] for record in records]
    if output_format == "json":
        objects = [dict(zip(HEADERS, row, strict=True)) for row in rows]
        out.write(orjson.dumps(objects, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    texts = [[_text(cell) for cell in row] for row in rows]
    if output_format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADERS)
        writer.writerows(texts)
        return
    widths = [max(len(cell) for cell in column) for column in zip(HEADERS, *texts, strict=True)]
    for row in [list(HEADERS), *texts]:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        out.write("\n")


def _text(cell: Any) -> str:
    if cell is None:
        return ""
    if isinstance(cell, list):
        return ",".join(cell)
    return str(cell)


def run_query(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """``audit-consumer query ...``: 0 after printing, 2 on a usage or configuration error,
    1 when the store cannot be reached."""
    args = build_parser(environ).parse_args(argv)
    try:
        settings = settings_from_args(args, datetime.now(UTC))
        records, cut = asyncio.run(fetch(settings))
    except AuditRelayError as exc:
        print(f"audit-consumer query: error: {exc}", file=sys.stderr)
        return 1 if exc.retriable else 2
    render(records, settings.format, sys.stdout)
    if cut:
        print(
            f"audit-consumer query: showing the newest {settings.limit} rows; more match "
            "(--limit 0 prints them all)",
            file=sys.stderr,
        )
    return 0
