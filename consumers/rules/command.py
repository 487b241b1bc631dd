"""``audit-consumer rules test``: evaluate rules files on files of audit events, offline.

Prints one alert per line on stdout, in Falco's JSON output format (what ``--sink alerts``
publishes), and a summary on stderr: how many events were read, how many alerts each rule
raised. Exits 0 whether or not alerts fire, 2 when a rules file cannot be loaded or an events
file cannot be read.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from audit_common.errors import ConfigError
from consumers.event_json import whole
from consumers.rules.options import PRIORITY_NAMES, RULES_HELP, load, priority_arg
from consumers.rules.ruleset import Priority, RuleSet

GZIP_MAGIC = b"\x1f\x8b"
EventsStream = IO[bytes] | gzip.GzipFile


class EventsFileError(ConfigError):
    """An events file that cannot be read, or a line of it that is no audit event."""


@dataclass(frozen=True)
class RulesTestSettings:
    rules: tuple[str, ...]
    events: tuple[str, ...]
    min_priority: Priority


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audit-consumer rules",
        description="Work with detection rules (Falco's rules language, k8s_audit source).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    test = commands.add_parser(
        "test",
        help="evaluate rules on files of audit events and print the alerts",
        description=(
            "Evaluate rules files on audit events and print each alert as one JSON object per "
            "line on stdout (Falco's JSON output format, as '--sink alerts' publishes it); a "
            "summary goes to stderr. Exit status: 0 whether or not alerts fire, 2 when a rules "
            "file cannot be loaded or an events file cannot be read."
        ),
    )
    test.add_argument(
        "--rules",
        action="append",
        metavar="FILE",
        help=RULES_HELP,
    )
    test.add_argument(
        "--min-priority",
        type=priority_arg,
        default="debug",
        metavar="PRIORITY",
        help=f"skip rules below this priority: one of {', '.join(PRIORITY_NAMES)} "
        "(default: debug, every rule)",
    )
    test.add_argument(
        "events",
        nargs="+",
        metavar="EVENTS_FILE",
        help="audit events: one JSON Event (an audit.log) or EventList per line, or one "
        "EventList or Event document; - reads stdin",
    )
    return parser


def _events_of(document: Any, where: str) -> Iterator[Mapping[str, Any]]:
    """The events of one JSON document: an EventList's items, or the document itself."""
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise EventsFileError(f"{where}: a JSON {kind}, not an audit Event or EventList")
    if document.get("kind") != "EventList":
        yield document
        return
    items = document.get("items")
    if not isinstance(items, list):
        raise EventsFileError(f"{where}: an EventList without a list of items")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise EventsFileError(f"{where}: item {index} is no JSON object")
        yield item


def read_events(name: str, stream: EventsStream) -> Iterator[Mapping[str, Any]]:
    """The events of one file, read as it goes: JSON lines (each an Event or an EventList), or
    one document over several lines (its first line is no JSON value by itself).

    Raises EventsFileError naming the file and the line that is not what it should be.
    """
    first = True
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            document = whole(line)
        except (ValueError, RecursionError) as exc:
            if not _is_utf8(line):
                raise EventsFileError(
                    f"{name} line {number}: not text (bytes that are not UTF-8): not an audit "
                    "log, or compressed other than with gzip"
                ) from exc
            if not first or not line.lstrip().startswith((b"{", b"[")):
                raise EventsFileError(f"{name} line {number}: not JSON: {exc}") from exc
            yield from _events_of(_document(name, line + stream.read()), name)
            return
        first = False
        yield from _events_of(document, f"{name} line {number}")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _document(name: str, data: bytes) -> Any:
    try:
        return whole(data)
    except (ValueError, RecursionError) as exc:
        raise EventsFileError(f"{name}: not JSON: {exc}") from exc


def _open(name: str, stdin: BinaryIO) -> EventsStream:
    """The events file ``name`` (``-``: stdin), decompressed when it is gzip (by its magic
    bytes, whatever its name: rotated audit logs are ``audit-...log.gz``)."""
    if name == "-":
        peek = getattr(stdin, "peek", None)
        is_gzip = peek is not None and peek(2)[:2] == GZIP_MAGIC
        return gzip.GzipFile(fileobj=stdin, mode="rb") if is_gzip else stdin
    try:
        with Path(name).open("rb") as file:
            is_gzip = file.read(2) == GZIP_MAGIC
        return gzip.open(name, "rb") if is_gzip else Path(name).open("rb")
    except OSError as exc:
        raise EventsFileError(f"cannot read {name}: {exc.strerror or exc}") from exc


def run_test(
    settings: RulesTestSettings, rules: RuleSet, stdin: BinaryIO, out: BinaryIO, err: IO[str]
) -> None:
    """Evaluate ``rules`` on every event of ``settings.events``, writing alerts to ``out`` and
    the summary to ``err``. Raises EventsFileError (after printing the alerts so far)."""
    events = 0
    by_rule: Counter[str] = Counter()
    for name in settings.events:
        stream = _open(name, stdin)
        try:
            for event in read_events(name, stream):
                events += 1
                for alert in rules.evaluate(event):
                    by_rule[alert.rule] += 1
                    out.write(alert.to_json() + b"\n")
        except EOFError as exc:  # a gzip file cut short
            raise EventsFileError(f"cannot read {name}: the gzip data ends early") from exc
        except zlib.error as exc:
            raise EventsFileError(f"cannot read {name}: corrupt gzip data: {exc}") from exc
        except OSError as exc:  # gzip.BadGzipFile among them
            raise EventsFileError(f"cannot read {name}: {exc.strerror or exc}") from exc
        finally:
            if stream is not stdin:
                stream.close()
    out.flush()
    files = len(settings.events)
    err.write(
        f"{events} events read from {files} file{'s' * (files != 1)}, {by_rule.total()} alerts\n"
    )
    for rule, count in sorted(by_rule.items(), key=lambda item: (-item[1], item[0])):
        err.write(f"{count:8d}  {rule}\n")


def run_rules(argv: Sequence[str]) -> int:
    """``audit-consumer rules ...``; returns the exit status (argparse exits 2 on bad usage)."""
    args = build_parser().parse_args(argv)
    settings = RulesTestSettings(tuple(args.rules or ()), tuple(args.events), args.min_priority)
    try:
        rules = load(settings.rules, settings.min_priority)
        run_test(settings, rules, sys.stdin.buffer, sys.stdout.buffer, sys.stderr)
    except ConfigError as exc:  # RulesError and EventsFileError
        print(f"audit-consumer: error: {exc}", file=sys.stderr)
        return 2
    return 0
