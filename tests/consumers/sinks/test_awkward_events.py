"""Every sink takes what the relay publishes of items parsers refuse (issue 22): an event whose
bytes that were not UTF-8 are escaped (valid UTF-8, private-use characters), and one nested
deeper than any parser goes (read member by member)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from audit_common.escaped_bytes import escape, unescape
from consumers.events import ConsumedEvent, decode
from consumers.postgres.rows import row
from consumers.rules.ruleset import DEFAULT_RULES, load_rules
from consumers.sinks.alerts_event import for_rules
from consumers.sinks.http_formats import BodyOptions, encode
from consumers.sinks.jsonl import JsonLinesSink
from tests.consumers.messages import with_fresh_ids
from tests.consumers.sinks.test_csv_log import write_csv
from tests.support import apiserver_json

ENVELOPE = b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",'


def published(request_object: bytes, annotation: bytes | None = None) -> bytes:
    """An event's value as the relay publishes it: its own bytes, escaped where not UTF-8."""
    [event] = with_fresh_ids(1)
    fields = {k: v for k, v in event.items() if k not in ("kind", "apiVersion")}
    item = apiserver_json.item(fields, request_object, annotation)
    value, _ = escape(ENVELOPE + item[1:])
    return value


AWKWARD = {
    "escaped": published(b'{"a":"\xc3(\xff"}', annotation=b'"\xe9\xff\xfe"'),
    "deep": published(apiserver_json.nested(apiserver_json.GO_MAX_DEPTH, b"1", objects=True)),
}


def consumed(value: bytes) -> ConsumedEvent:
    return decode(value, [("cluster", b"prod")], topic="t", partition=0, offset=0)


@pytest.mark.parametrize("name", list(AWKWARD))
async def test_the_file_and_csv_sinks_write_it(name: str, tmp_path: Path) -> None:
    event = consumed(AWKWARD[name])
    assert JsonLinesSink.line(event) == AWKWARD[name] + b"\n"
    text = await write_csv(tmp_path, [event], "--csv-columns", "auditID,verb,username")
    assert text == f"{event.audit_id},{event.verb},{event.username}\n"
    assert event.username and event.verb


@pytest.mark.parametrize("name", list(AWKWARD))
@pytest.mark.parametrize("body_format", ["ndjson", "json-array", "elasticsearch", "splunk-hec"])
def test_the_http_sink_encodes_it(name: str, body_format: str) -> None:
    body = encode(body_format, [consumed(AWKWARD[name])], BodyOptions(index="audit"))
    body.decode()  # UTF-8
    assert AWKWARD[name][:-1] + b',"cluster":"prod"' in body  # the event's bytes as published


def test_the_escape_survives_a_sink_that_parses_and_writes_the_event_again() -> None:
    event = consumed(AWKWARD["escaped"])
    written = orjson.dumps(event.data)
    assert unescape(written) == unescape(orjson.dumps(orjson.loads(AWKWARD["escaped"])))
    assert b"\xe9\xff\xfe" in unescape(written)


@pytest.mark.parametrize("name", list(AWKWARD))
def test_the_postgres_row_and_the_rules_take_it(name: str) -> None:
    event = consumed(AWKWARD[name])
    values = row(event)
    assert values[1] == event.audit_id
    rules = load_rules([DEFAULT_RULES])
    rules.evaluate(for_rules(event))  # never raises
